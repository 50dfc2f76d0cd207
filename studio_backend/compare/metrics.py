"""Comparison metrics of two aligned ``[tokens, channels]`` tensors, per token and whole.

A is the reference (relative errors divide by |A|), B the run under test. Float tensors are
measured in ONE fused pass per pair (``studio_backend/compare/kernel.py``, numba): the stored dtype is
read directly (bf16, fp16, float32, float64; other float dtypes are first cast to float32) and
every per-token sum is accumulated in float64; the whole-tensor values come from the per-token
ones. Blocks of tokens run on ``WORKERS`` threads (the kernel releases the GIL).

- msprobe's: cosine similarity, Euclidean distance ||B - A||, max |B - A|, max |B - A| / |A|,
  share of elements with relative error <= 0.1 % and <= 0.5 % ("one / five thousandth").
- SGLang's rel_diff = 1 - 2 sum(xy) / (sum(x^2) + sum(y^2)), evaluated as the identical
  sum((x - y)^2) / (sum(x^2) + sum(y^2)), which keeps its precision when the runs nearly agree
  (the subtraction form cancels to zero below ~1e-16).

Conventions at zero: both vectors zero -> cosine 1, rel_diff 0; one zero -> cosine 0. A relative
error divides by max(|A|, 1e-12) (so 0 vs 0 counts as within tolerance). A NaN (or inf - inf)
anywhere makes the sums, cosine, rel_diff and the maxima NaN. Integer tensors (token ids, top-k
ids) get ``mismatch``, the share of elements that differ, and NaN elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

REL_EPS = 1e-12
METRICS = (
    "cosine", "euclidean", "max_abs_error", "max_rel_error", "within_0_1pct", "within_0_5pct",
    "rel_diff", "mismatch",
)  # fmt: skip

# Kernel threads: one per core this process may use (the kernel is memory- and ALU-bound, one
# thread per core is what helps), at most 8.
WORKERS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
# Elements per kernel task: big enough that the Python hand-off (~20 us) is noise, small
# enough that the last tasks of a run keep every thread busy.
TASK = 1 << 19
# Intra-op threads torch may use for what stays in torch while comparing (integer tensors,
# splitting fused parts, casting fp8): a few small ops, where OpenMP's wake-up costs more
# than a second core gives (measured, docs/PERFORMANCE.md).
THREADS = 1

_CODES = {torch.float64: 0, torch.float32: 1, torch.bfloat16: 2, torch.float16: 3}


@contextmanager
def threads(n: int = THREADS) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def warm() -> None:
    """Compile (or load from numba's disk cache) the kernel now, not on a user's first compare:
    seconds the first time on a machine, milliseconds after (docs/PERFORMANCE.md)."""
    compare(torch.ones(1, 1, dtype=torch.bfloat16), torch.ones(1, 1))


_EMPTY = {d: np.empty(0, d) for d in (np.uint16, np.float32, np.float64)}
for _e in _EMPTY.values():
    _e.flags.writeable = False


@dataclass
class _Side:
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray]  # (u16, f32, f64): the kernel's view
    code: int
    stride: int  # elements between rows
    keep: torch.Tensor  # the tensor the view reads (a memory map stays open)


def _side(t: torch.Tensor) -> _Side:
    """The kernel's view of a 2-D float tensor: its elements from row 0 on as one read-only
    1-D array (bf16/fp16 as uint16 bits), its dtype code and its row stride."""
    if t.dtype not in _CODES:
        t = t.float()  # fp8 and friends: exact in float32
    if t.stride(1) != 1 or t.stride(0) < 0:
        t = t.contiguous()
    raw = t.view(torch.int16).numpy().view(np.uint16) if t.element_size() == 2 else t.numpy()
    rows, c = t.shape  # both > 0 here
    flat = np.lib.stride_tricks.as_strided(
        raw, shape=((rows - 1) * t.stride(0) + c,), strides=(raw.itemsize,), writeable=False
    )
    arrays = tuple(flat if flat.dtype == d else e for d, e in _EMPTY.items())
    return _Side(arrays, _CODES[t.dtype], t.stride(0), t)


def _finish(out: np.ndarray, c: int) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """The metrics from the kernel's per-token fields (kernel.FIELDS)."""
    sxy, sxx, syy, sdd, mabs, mrel, w1, w5 = out.T
    t = len(out)
    tok = {
        "cosine": _cos(sxy, sxx, syy), "euclidean": np.sqrt(sdd), "max_abs_error": mabs,
        "max_rel_error": mrel, "within_0_1pct": w1 / c, "within_0_5pct": w5 / c,
        "rel_diff": _rel_diff(sdd, sxx, syy), "mismatch": np.full(t, np.nan),
    }  # fmt: skip
    SXY, SXX, SYY, SDD = (np.array([s.sum()]) for s in (sxy, sxx, syy, sdd))  # noqa: N806
    n = t * c
    whole = {
        "cosine": float(_cos(SXY, SXX, SYY)[0]), "euclidean": float(np.sqrt(SDD[0])),
        "max_abs_error": float(mabs.max()), "max_rel_error": float(mrel.max()),
        "within_0_1pct": float(w1.sum() / n), "within_0_5pct": float(w5.sum() / n),
        "rel_diff": float(_rel_diff(SDD, SXX, SYY)[0]), "mismatch": float("nan"),
    }  # fmt: skip
    return whole, tok


def _cos(sxy: np.ndarray, sxx: np.ndarray, syy: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        den = np.sqrt(sxx * syy)
        out = np.where(den > 0, sxy / np.where(den > 0, den, 1.0), 0.0)
    out = np.where((sxx == 0) & (syy == 0), 1.0, out)
    return np.where(np.isnan(sxy) | np.isnan(den), np.nan, out)


def _rel_diff(sdd: np.ndarray, sxx: np.ndarray, syy: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        den = sxx + syy
        out = np.where(den > 0, sdd / np.where(den > 0, den, 1.0), 0.0)
    return np.where(np.isnan(sdd) | np.isnan(den), np.nan, out)


def _integer(a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    t, c = a.shape
    nan_t = np.full(t, np.nan)
    neq = (a.to(torch.int64) != b.to(torch.int64)).double()
    tok = {m: nan_t for m in METRICS}
    tok["mismatch"] = neq.mean(1).numpy() if c else nan_t
    whole = {m: float("nan") for m in METRICS}
    whole["mismatch"] = float(neq.mean()) if neq.numel() else float("nan")
    return whole, tok


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"need two [tokens, channels] tensors of one shape: {a.shape} {b.shape}")


Loader = Callable[[], tuple[torch.Tensor, torch.Tensor]]
Result = tuple[dict[str, float], dict[str, np.ndarray]]


def compare_all(loaders: Sequence[Loader], workers: int | None = None) -> list[Result]:
    """``compare`` of every pair ``loader()`` returns, in order. Worker threads load the pairs
    (file opens and memory maps release the GIL) and measure them in blocks of ``TASK``
    elements: a pair's first block on the thread that loaded it, the others queued for any."""
    from studio_backend.compare import kernel

    results: list[Result | None] = [None] * len(loaders)
    blocks: list[tuple[int, Future]] = []  # (pair, block) of pairs split over threads
    outs: dict[int, tuple[np.ndarray, int]] = {}

    def pair(i: int, pool: ThreadPoolExecutor) -> None:
        a, b = loaders[i]()
        _check(a, b)
        t, c = a.shape
        if not (a.is_floating_point() and b.is_floating_point()):
            results[i] = _integer(a, b)
            return
        if t == 0 or c == 0:
            nan_t = np.full(t, np.nan)
            results[i] = ({m: float("nan") for m in METRICS}, {m: nan_t for m in METRICS})
            return
        x, y = _side(a), _side(b)
        out = np.empty((t, len(kernel.FIELDS)))
        outs[i] = (out, c)
        step = max(1, TASK // c)

        def rows(r0: int) -> None:
            kernel.rows(x.arrays, y.arrays, x.code, y.code, x.stride, y.stride, c, r0,
                        min(t, r0 + step), kernel.F16_TABLE, out)  # fmt: skip

        for r0 in range(step, t, step):
            blocks.append((i, pool.submit(rows, r0)))
        rows(0)

    with ThreadPoolExecutor(max_workers=workers or WORKERS) as pool:
        pairs = [pool.submit(pair, i, pool) for i in range(len(loaders))]
        for f in pairs:
            f.result()  # a pair's error (a bad file, a shape mismatch) is raised here
        for _i, f in blocks:  # complete: every pair task has queued its blocks by now
            f.result()
    for i, (out, c) in outs.items():
        results[i] = _finish(out, c)
    return results  # type: ignore[return-value] - every slot is filled


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``(whole, per_token)``: each metric over all elements, and one value per token (row)."""
    return compare_all([lambda: (a, b)])[0]
