"""One-pass numba kernels for the ingest's hot loops over 16-bit float tensors.

Each kernel replaces several numpy/torch passes (and their temporaries) with one pass, and
releases the GIL (``nogil``) so the ingest's worker threads run them in parallel. Their results
equal the torch code they replace (tests/dumps/test_fused.py holds the oracles); where a case
would need the slow path's special rules (a non-finite value), the callers fall back to torch.

The first call of each kernel in a process loads its machine code from numba's cache (it is
compiled once per machine, seconds); benches warm up first.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

_BLOCK = 2048  # elements per block: equal blocks are skipped at memcmp speed
_FLT_MAX = np.float32(np.finfo(np.float32).max)

# float32 value of every 16-bit pattern (index: the pattern as uint16)
_TABLES = {
    dt: torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dt).float().numpy().copy()
    for dt in (torch.bfloat16, torch.float16)
}


def bits16(t: torch.Tensor) -> np.ndarray | None:
    """A contiguous bf16/fp16 tensor's bit patterns as a uint16 array (no copy); else None."""
    if t.dtype not in _TABLES or not t.is_contiguous():
        return None
    try:
        return t.view(torch.int16).numpy().view(np.uint16)
    except (RuntimeError, TypeError):
        return None


# -- statistics -------------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _hist_reduce(bits, table, counts, chmax, chsum, tokmax):  # noqa: ANN001, ANN202
    """One pass over ``bits`` (uint16 [T, C]): pattern histogram, per-channel max magnitude
    pattern and float64 sum of |x|, per-token max magnitude pattern.

    Magnitude patterns (sign bit cleared) order like the magnitudes they encode for finite
    values, so maxima are taken on integers and converted once at the end. ``table``: the
    float32 value of each pattern (fp16); None for bf16, whose value is the pattern shifted
    into a float32's high half (no gather: the row loops stay vectorised, 3x faster).
    """
    t_n, c_n = bits.shape
    u = np.empty(c_n, np.uint32)
    row_f = u.view(np.float32)
    for i in range(t_n):
        row = bits[i]
        m = np.uint16(0)
        for j in range(c_n):
            b = row[j] & np.uint16(0x7FFF)
            chmax[j] = max(chmax[j], b)
            m = max(m, b)
            if table is None:
                u[j] = np.uint32(b) << 16
            else:
                row_f[j] = table[b]
        tokmax[i] = m
        for j in range(c_n):
            chsum[j] += row_f[j]
        for j in range(c_n):
            counts[row[j]] += 1


def hist_reduce(
    bits: np.ndarray, dtype: torch.dtype
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(counts of the 65536 patterns, channel max |x|, channel sum |x| (float64), token max
    |x|) of a uint16 [T, C] matrix of bf16/fp16 patterns; maxima as float32. The vectors are
    only meaningful when every value is finite (the counts tell)."""
    t_n, c_n = bits.shape
    table = _TABLES[dtype]
    counts = np.zeros(1 << 16, np.int64)
    chmax = np.zeros(c_n, np.uint16)
    chsum = np.zeros(c_n, np.float64)
    tokmax = np.zeros(t_n, np.uint16)
    if bits.size:
        _hist_reduce(bits, None if dtype == torch.bfloat16 else table, counts, chmax, chsum, tokmax)
    return counts, table[chmax], chsum, table[tokmax]


# -- replica checks and partial sums (bf16) -----------------------------------------------------
def _words(a: np.ndarray) -> np.ndarray:
    """The whole 8-byte words at the start of a contiguous uint16 array."""
    return a[: a.size // 4 * 4].view(np.uint64)


@numba.njit(cache=True, nogil=True)
def _absmax_bf16(a):  # noqa: ANN001, ANN202
    """(max |x| over a bf16 pattern array, whether any value is NaN or infinite)."""
    m = np.uint16(0)
    for j in range(a.size):
        m = max(m, a[j] & np.uint16(0x7FFF))
    return m, m >= np.uint16(0x7F80)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _max_diff_bf16(shards, words):  # noqa: ANN001, ANN202
    """(max |shard - first| in float32 over every shard, whether any pattern differs) of bf16
    pattern arrays, in one pass over all of them (the first is read once, not once per pair);
    ``words``: each shard's whole 8-byte words. Blocks whose words are all equal are skipped
    without converting. fastmath lets the max reduce in vector lanes: the result is exact for
    finite values, and the callers discard it when a value is not finite."""
    n = shards[0].size
    nw = words[0].size
    ua = np.empty(_BLOCK, np.uint32)
    ub = np.empty(_BLOCK, np.uint32)
    fa = ua.view(np.float32)
    fb = ub.view(np.float32)
    diff = np.float32(0.0)
    unequal = False
    w = _BLOCK // 4
    nb = nw // w
    w0 = words[0]
    s0 = shards[0]
    for blk in range(nb + 1):
        s8 = blk * w
        e8 = min(nw, s8 + w)
        acc = np.uint64(0)
        for k in range(1, len(shards)):
            wk = words[k]
            for j in range(s8, e8):
                acc |= w0[j] ^ wk[j]
        s = s8 * 4
        e = e8 * 4
        if blk == nb:  # the words' tail, and the elements past the last whole word
            for k in range(1, len(shards)):
                sk = shards[k]
                for j in range(e, n):
                    acc |= np.uint64(s0[j] ^ sk[j])
            e = n
        if acc == 0:
            continue
        unequal = True
        m = e - s
        for j in range(m):
            ua[j] = np.uint32(s0[s + j]) << 16
        for k in range(1, len(shards)):
            sk = shards[k]
            for j in range(m):
                ub[j] = np.uint32(sk[s + j]) << 16
            d = np.float32(0.0)
            for j in range(m):
                d = max(d, abs(fa[j] - fb[j]))
            diff = max(diff, d)
    return diff, unequal


def _bf16_arrays(tensors: list[torch.Tensor]) -> list[np.ndarray] | None:
    """Flat uint16 patterns of contiguous bf16 tensors of one shape; None if not that."""
    if tensors[0].dtype != torch.bfloat16:
        return None
    arrs = [bits16(t) for t in tensors]
    if any(a is None or a.shape != arrs[0].shape for a in arrs):
        return None
    return [a.reshape(-1) for a in arrs]


def agree_bf16(shards: list[torch.Tensor]) -> tuple[float, float | None] | None:
    """(max |diff| of every shard against the first, max |x| over all shards or None when
    every shard is bitwise equal to the first) for contiguous bf16 shards of one shape, as
    ``stitcher.max_diff`` and ``stitcher.absmax`` compute them; None when not applicable
    (another dtype or layout, or a NaN/inf whose special rules the torch path applies)."""
    arrs = _bf16_arrays(shards)
    if arrs is None:
        return None
    if len(arrs) < 2:
        return 0.0, None
    diff, unequal = _max_diff_bf16(tuple(arrs), tuple(_words(a) for a in arrs))
    if not unequal:
        return 0.0, None
    top = 0
    for a in arrs:
        m, nonfinite = _absmax_bf16(a)
        if nonfinite:
            return None
        top = max(top, int(m))
    return float(diff), float(_TABLES[torch.bfloat16][top])


def diff_and_scale_bf16(mine: torch.Tensor, parent: torch.Tensor) -> tuple[float, float] | None:
    """(``max_diff(mine, parent)``, max |parent|) for finite contiguous bf16 tensors of one
    shape; None when not applicable (the torch path decides NaN/inf)."""
    arrs = _bf16_arrays([mine, parent])
    if arrs is None:
        return None
    top = 0
    for a in arrs:
        m, nonfinite = _absmax_bf16(a)
        if nonfinite:
            return None
        top = int(m)  # the parent's, last
    diff, _ = _max_diff_bf16(tuple(arrs), tuple(_words(a) for a in arrs))
    return float(diff), float(_TABLES[torch.bfloat16][top])


@numba.njit(cache=True, nogil=True)
def _sum_bf16(shards, out):  # noqa: ANN001, ANN202
    """out = bf16(sum of the shards in float32, in order), rounded to nearest even; returns
    False (out unusable) if a sum is NaN (torch's vectorised and scalar casts differ there)."""
    n = out.size
    acc = np.empty(_BLOCK, np.float32)
    u = np.empty(_BLOCK, np.uint32)
    f = u.view(np.float32)
    bad = np.uint32(0)
    for s in range(0, n, _BLOCK):
        m = min(n, s + _BLOCK) - s
        for k in range(len(shards)):
            sh = shards[k][s : s + m]
            for j in range(m):
                u[j] = np.uint32(sh[j]) << 16
            if k == 0:
                acc[:m] = f[:m]
            else:
                for j in range(m):
                    acc[j] += f[j]
        f[:m] = acc[:m]
        o = out[s : s + m]
        for j in range(m):
            w = u[j]
            bad |= np.uint32((w & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000))
            o[j] = np.uint16((w + np.uint32(0x7FFF) + ((w >> 16) & np.uint32(1))) >> 16)
    return bad == 0


def sum_bf16(shards: list[torch.Tensor]) -> torch.Tensor | None:
    """The float32 sum of contiguous bf16 shards (in order) cast to bf16, bit-identical to
    ``acc = s0.float(); acc += s1; ...; acc.bfloat16()``; None when not applicable."""
    arrs = _bf16_arrays(shards)
    if arrs is None:
        return None
    out = torch.empty(shards[0].shape, dtype=torch.bfloat16)
    ok = _sum_bf16(tuple(arrs), bits16(out).reshape(-1))
    return out if ok else None


def warm_up() -> None:
    """Load every kernel's machine code now (the first call in a process costs ~1 s: numba's
    own start-up, then each kernel's cache), e.g. before timing an ingest."""
    a = torch.ones(8, dtype=torch.bfloat16)
    b = a * 2
    agree_bf16([a, b])
    agree_bf16([a, b, a, b])
    sum_bf16([a, b])
    sum_bf16([a, b, a, b])
    diff_and_scale_bf16(a, b)
    for dt in _TABLES:
        hist_reduce(bits16(a.to(dt).reshape(2, 4)), dt)
