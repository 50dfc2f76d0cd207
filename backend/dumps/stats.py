"""Statistics of one tensor in one fused pass over a float32 view (numpy-checked in tests).

Tensors are seen as ``[tokens, channels]``: the first dim is tokens and the remaining dims are
flattened into channels (a 1-D tensor is one token). Moments are accumulated in float64 over the
finite values; NaN and Inf are counted, not propagated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

OVER_THRESHOLD = 6.0  # LLM.int8() outlier feature magnitude
MASSIVE_ABS = 100.0  # Sun et al. 2024: |x| > 100 ...
MASSIVE_RATIO = 1000.0  # ... and > 1000 x the median |x| of the hidden state
TOP_K = 16


@dataclass
class TensorStats:
    numel: int
    min: float
    max: float
    mean: float
    std: float
    absmax: float
    l2: float
    nan_count: int
    inf_count: int
    kurtosis: float
    over6_count: int
    median_abs: float
    massive_count: int
    channel_absmax: list[float]
    channel_mean_abs: list[float]
    token_absmax: list[float]
    top: list[tuple[int, int, float]]  # (token, channel, value), largest |x| first

    def as_row(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("top")
        return d


def as_2d(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 0:
        return t.reshape(1, 1)
    if t.dim() == 1:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1)


def compute(t: torch.Tensor, top_k: int = TOP_K) -> TensorStats:
    """All statistics of ``t`` (any dtype; integers and bf16 are widened to float32)."""
    x = as_2d(t).to(torch.float32)
    n = x.numel()
    if n == 0:
        nan = float("nan")
        return TensorStats(0, nan, nan, nan, nan, nan, 0.0, 0, 0, nan, 0, nan, 0, [], [], [], [])
    finite = torch.isfinite(x)
    nan_count = int(torch.isnan(x).sum())
    inf_count = int(n - nan_count - int(finite.sum()))
    xf = torch.where(finite, x, torch.zeros((), dtype=x.dtype)) if nan_count or inf_count else x
    nf = int(finite.sum()) if (nan_count or inf_count) else n
    a = xf.abs()
    # moments in float64: raw sums, combined into central moments once
    x64 = xf.to(torch.float64)
    s1 = float(x64.sum())
    x2 = x64 * x64
    s2 = float(x2.sum())
    s3 = float((x2 * x64).sum())
    s4 = float((x2 * x2).sum())
    mean = s1 / nf if nf else float("nan")
    e2, e3, e4 = (s2 / nf, s3 / nf, s4 / nf) if nf else (math.nan,) * 3
    var = max(e2 - mean * mean, 0.0)
    m4 = e4 - 4 * mean * e3 + 6 * mean * mean * e2 - 3 * mean**4
    kurt = m4 / (var * var) - 3.0 if var > 0 else float("nan")
    flat_a = a.reshape(-1)
    # lower median of |x| over the finite values (the hidden state's typical magnitude)
    fin_a = flat_a[finite.reshape(-1)] if nf != n else flat_a
    median_abs = float(torch.kthvalue(fin_a, (nf + 1) // 2).values) if nf else float("nan")
    massive_cut = max(MASSIVE_ABS, MASSIVE_RATIO * median_abs)
    k = min(top_k, n)
    top_v, top_i = torch.topk(flat_a, k)
    cols = x.shape[1]
    signed = xf.reshape(-1)[top_i]
    top = [(int(i) // cols, int(i) % cols, float(v)) for i, v in zip(top_i, signed, strict=True)]
    del top_v
    return TensorStats(
        numel=n,
        min=float(xf.min()) if nf else math.nan,
        max=float(xf.max()) if nf else math.nan,
        mean=mean,
        std=math.sqrt(var),
        absmax=float(a.max()),
        l2=math.sqrt(s2),
        nan_count=nan_count,
        inf_count=inf_count,
        kurtosis=kurt,
        over6_count=int((a > OVER_THRESHOLD).sum()),
        median_abs=median_abs,
        massive_count=int((a > massive_cut).sum()),
        channel_absmax=a.amax(dim=0).tolist(),
        channel_mean_abs=(a.sum(dim=0, dtype=torch.float64) / x.shape[0]).tolist(),
        token_absmax=a.amax(dim=1).tolist(),
        top=top,
    )
