"""The comparison metrics of a block of token rows in one fused pass (numba).

Each row (token) of A and B is decoded, 1024 columns at a time, from its stored dtype into
float64 (bf16 as its uint16 bits shifted into a float32, fp16 through a 65536-entry table,
float32 and float64 directly), then ONE loop accumulates, in float64, sum x*x, y*y, x*y, d*d
(d = y - x), the counts of relative errors within 0.1 % and 0.5 %, and the maxima of |d| and
|d| / max(|x|, 1e-12). The maxima are taken on the float64 bit patterns as int64 (non-negative
floats order like their bits), which vectorises where a float max with NaN semantics does not;
NaNs are counted separately and make the maximum NaN, as numpy's and torch's max do.

``fastmath`` allows only reassociation, contraction (FMA) and signed-zero freedom, so the
sums vectorise; NaN and inf keep their IEEE meaning (no ``nnan``/``ninf``/``arcp``). The sums
differ from numpy's only in summation order (relative 1e-15 or so).

Compiled on first call (about 4 s; one specialisation: each side arrives as the same
``(uint16, float32, float64)`` triple of read-only arrays, the one its dtype code names holding
the data) and cached on disk (``cache=True``: __pycache__ next to this file, or numba's user
cache when that is read-only); a later process still pays numba's own setup on its first call
(~0.5-1 s). ``nogil``: callers run blocks of rows on several threads (metrics.py).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

# dtype codes of the byte buffers the kernel reads
F64, F32, BF16, F16 = 0, 1, 2, 3
ITEMSIZE = {F64: 8, F32: 4, BF16: 2, F16: 2}
FIELDS = ("sxy", "sxx", "syy", "sdd", "max_abs", "max_rel", "within_1", "within_5")
REL_EPS = 1e-12
FASTMATH = {"reassoc", "contract", "nsz"}
F16_TABLE = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


@intrinsic
def _bits(typingctx, x):  # noqa: ANN001, ANN202, ARG001 - numba's intrinsic protocol
    """The int64 bit pattern of a float64 (a bitcast: vectorises, unlike a float max)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _float(typingctx, x):  # noqa: ANN001, ANN202, ARG001
    """The float64 of an int64 bit pattern."""
    if x != types.int64:
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202, ARG001
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def _decode(u16, f32, f64, code, off, n, table, tmp, tmp_f, dst):  # noqa: ANN001, ANN202
    """Elements ``off .. off + n`` of one side into ``dst`` (float64); the side is ``u16``
    (bf16 or fp16 bits), ``f32`` or ``f64`` by ``code``, the other two are unused."""
    # Sliced first: indexing with a loop counter from 0 vectorises (``a[off + j]`` is checked
    # for negative wrap-around element by element).
    if code == BF16:
        src = u16[off : off + n]
        for j in range(n):
            tmp[j] = np.uint32(src[j]) << 16
        for j in range(n):
            dst[j] = tmp_f[j]  # tmp_f: tmp's bits as float32
    elif code == F16:
        src = u16[off : off + n]
        for j in range(n):
            dst[j] = table[src[j]]
    elif code == F32:
        src32 = f32[off : off + n]
        for j in range(n):
            dst[j] = src32[j]
    else:
        src64 = f64[off : off + n]
        for j in range(n):
            dst[j] = src64[j]


# Columns decoded at a time: the two float64 chunks stay in the L1 cache for the fused loop.
CHUNK = 1024


@numba.njit(cache=True, nogil=True, fastmath=FASTMATH)
def rows(x, y, xc, yc, xs, ys, c, r0, r1, table, out):  # noqa: ANN001, ANN201
    """Per-row sums and extremes of rows ``r0 .. r1`` into ``out[r0:r1]`` (columns FIELDS).

    ``x``/``y``: each side as ``(u16, f32, f64)`` 1-D arrays from its row 0 on, the one its
    dtype code ``xc``/``yc`` names holding the data; ``xs``/``ys``: row strides in elements;
    ``c``: elements per row (contiguous)."""
    bx = np.empty(CHUNK, np.float64)
    by = np.empty(CHUNK, np.float64)
    tmp = np.empty(CHUNK, np.uint32)
    tmp_f = tmp.view(np.float32)
    xu, xf, xd = x
    yu, yf, yd = y
    for i in range(r0, r1):
        sxy = 0.0
        sxx = 0.0
        syy = 0.0
        sdd = 0.0
        w1 = 0
        w5 = 0
        nan_d = 0
        nan_r = 0
        md = np.int64(0)  # bits of max |d| (non-negative floats order like their bits)
        mr = np.int64(0)
        for j0 in range(0, c, CHUNK):
            n = min(CHUNK, c - j0)
            _decode(xu, xf, xd, xc, i * xs + j0, n, table, tmp, tmp_f, bx)
            _decode(yu, yf, yd, yc, i * ys + j0, n, table, tmp, tmp_f, by)
            for j in range(n):
                a = bx[j]
                b = by[j]
                d = b - a
                sxx += a * a
                syy += b * b
                sxy += a * b
                sdd += d * d
                ad = abs(d)
                m = abs(a)
                m = m if m > REL_EPS else REL_EPS  # max(|x|, 1e-12); a NaN x makes d NaN
                rel = ad / m
                w1 += rel <= 1e-3
                w5 += rel <= 5e-3
                nan_d += ad != ad
                nan_r += rel != rel
                v = _bits(ad)
                md = v if v > md else md
                v = _bits(rel)
                mr = v if v > mr else mr
        out[i, 0] = sxy
        out[i, 1] = sxx
        out[i, 2] = syy
        out[i, 3] = sdd
        out[i, 4] = _float(md) if nan_d == 0 else np.nan
        out[i, 5] = _float(mr) if nan_r == 0 else np.nan
        out[i, 6] = w1
        out[i, 7] = w5
