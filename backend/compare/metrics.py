"""Comparison metrics of two aligned ``[tokens, channels]`` tensors, per token and whole.

A is the reference (relative errors divide by |A|), B the run under test. Computed in float64
(vectorised torch over blocks of tokens; every dot product of a token from one batched 3x3 Gram
matrix of x, y and y - x; one intra-op thread, see ``THREADS``):

- msprobe's: cosine similarity, Euclidean distance ||B - A||, max |B - A|, max |B - A| / |A|,
  share of elements with relative error <= 0.1 % and <= 0.5 % ("one / five thousandth").
- SGLang's rel_diff = 1 - 2 sum(xy) / (sum(x^2) + sum(y^2)), evaluated as the identical
  sum((x - y)^2) / (sum(x^2) + sum(y^2)), which keeps its precision when the runs nearly agree
  (the subtraction form cancels to zero below ~1e-16).

Conventions at zero: both vectors zero -> cosine 1, rel_diff 0; one zero -> cosine 0. A relative
error divides by max(|A|, 1e-12) (so 0 vs 0 counts as within tolerance). Integer tensors (token
ids, top-k ids) get ``mismatch``, the share of elements that differ, and NaN elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

REL_EPS = 1e-12
METRICS = (
    "cosine", "euclidean", "max_abs_error", "max_rel_error", "within_0_1pct", "within_0_5pct",
    "rel_diff", "mismatch",
)  # fmt: skip


# Intra-op threads while comparing: each pass is a few MB of memory-bound work, where OpenMP's
# wake-up and hand-off cost more than a second core gives (measured, docs/PERFORMANCE.md).
THREADS = 1


@contextmanager
def threads(n: int = THREADS) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cos(sxy: torch.Tensor, sxx: torch.Tensor, syy: torch.Tensor) -> torch.Tensor:
    den = torch.sqrt(sxx * syy)
    out = torch.where(den > 0, sxy / torch.where(den > 0, den, 1.0), 0.0)
    return torch.where((sxx == 0) & (syy == 0), 1.0, out)


def _rel_diff(sdd: torch.Tensor, sxx: torch.Tensor, syy: torch.Tensor) -> torch.Tensor:
    den = sxx + syy
    return torch.where(den > 0, sdd / torch.where(den > 0, den, 1.0), 0.0)


# Elements per block (32 tokens of a 2048-wide hidden state): a block's float64 planes (512 KiB
# each) stay in the CPU cache between the passes over it.
BLOCK = 1 << 16


def _block(x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Per-row sums and extremes of one block of tokens, in float64, in few passes: x, y and
    d = y - x as three planes of one buffer, every dot product of a row from one batched matmul
    (the 3x3 Gram matrix of its x, y, d), then the absolute and relative errors in place."""
    r, c = x.shape
    buf = torch.empty(3, r, c, dtype=torch.float64)
    px, py, pd = buf
    px.copy_(x), py.copy_(y)
    torch.sub(py, px, out=pd)
    rows = buf.transpose(0, 1)  # [r, 3, c]
    g = torch.bmm(rows, rows.transpose(1, 2))  # [r, 3, 3]: x.x, x.y, ... d.d
    ad = pd.abs_()
    rel = torch.div(ad, px.abs_().clamp_min_(REL_EPS), out=py)  # x, y are not needed any more
    count = torch.int32
    return [g[:, 0, 1], g[:, 0, 0], g[:, 1, 1], g[:, 2, 2], ad.amax(1), rel.amax(1),
            (rel <= 1e-3).sum(1, dtype=count), (rel <= 5e-3).sum(1, dtype=count)]  # fmt: skip


def compare(a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``(whole, per_token)``: each metric over all elements, and one value per token (row)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"need two [tokens, channels] tensors of one shape: {a.shape} {b.shape}")
    t, c = a.shape
    nan_t = np.full(t, np.nan)
    if not (a.is_floating_point() and b.is_floating_point()):
        neq = (a.to(torch.int64) != b.to(torch.int64)).double()
        tok = {m: nan_t for m in METRICS}
        tok["mismatch"] = neq.mean(1).numpy() if c else nan_t
        whole = {m: float("nan") for m in METRICS}
        whole["mismatch"] = float(neq.mean()) if neq.numel() else float("nan")
        return whole, tok
    if t == 0 or c == 0:
        return {m: float("nan") for m in METRICS}, {m: nan_t for m in METRICS}
    rows = max(1, BLOCK // c)
    blocks = [_block(a[i : i + rows], b[i : i + rows]) for i in range(0, t, rows)]
    sxy, sxx, syy, sdd, mabs, mrel, w1, w5 = (torch.cat(v) for v in zip(*blocks, strict=True))
    w1, w5 = w1.double(), w5.double()
    tok = {
        "cosine": _cos(sxy, sxx, syy).numpy(),
        "euclidean": torch.sqrt(sdd).numpy(),
        "max_abs_error": mabs.numpy(),
        "max_rel_error": mrel.numpy(),
        "within_0_1pct": (w1 / c).numpy(),
        "within_0_5pct": (w5 / c).numpy(),
        "rel_diff": _rel_diff(sdd, sxx, syy).numpy(),
        "mismatch": nan_t,
    }
    n = t * c
    SXY, SXX, SYY, SDD = (s.sum().reshape(1) for s in (sxy, sxx, syy, sdd))  # noqa: N806
    whole = {
        "cosine": float(_cos(SXY, SXX, SYY)[0]),
        "euclidean": float(torch.sqrt(SDD)[0]),
        "max_abs_error": float(mabs.max()),
        "max_rel_error": float(mrel.max()),
        "within_0_1pct": float(w1.sum() / n),
        "within_0_5pct": float(w5.sum() / n),
        "rel_diff": float(_rel_diff(SDD, SXX, SYY)[0]),
        "mismatch": float("nan"),
    }
    return whole, tok
