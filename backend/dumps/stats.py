"""Statistics of one tensor in one fused pass over a float32 view (numpy-checked in tests).

Tensors are seen as ``[tokens, channels]``: the first dim is tokens and the remaining dims are
flattened into channels (a 1-D tensor is one token). Moments are accumulated in float64 over the
finite values; NaN and Inf are counted, not propagated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
        # a plain dict (dataclasses.asdict deep-copies the vectors: slow for wide tensors)
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "top"}


def as_2d(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 0:
        return t.reshape(1, 1)
    if t.dim() == 1:
        return t.reshape(1, -1)
    return t.reshape(t.shape[0], -1)


def compute(t: torch.Tensor, top_k: int = TOP_K) -> TensorStats:
    """All statistics of ``t`` (any dtype; integers and bf16 are widened to float32).

    Central moments come from float32 residuals summed in float64 (accurate without a float64
    copy of the tensor). A finite sum proves there is no NaN/Inf, so the masks are only built
    when needed.
    """
    x = as_2d(t).to(torch.float32)
    n = x.numel()
    if n == 0:
        nan = float("nan")
        return TensorStats(0, nan, nan, nan, nan, nan, 0.0, 0, 0, nan, 0, nan, 0, [], [], [], [])
    s1 = float(x.sum(dtype=torch.float64))
    nan_count = inf_count = 0
    xf, nf = x, n
    if not math.isfinite(s1):
        finite = torch.isfinite(x)
        nf = int(finite.sum())
        nan_count = int(torch.isnan(x).sum())
        inf_count = n - nf - nan_count
        xf = torch.where(finite, x, torch.zeros((), dtype=x.dtype))
        s1 = float(xf.sum(dtype=torch.float64))
    mean = s1 / nf if nf else float("nan")
    d = xf - mean
    if nf != n:
        d = torch.where(finite, d, torch.zeros((), dtype=d.dtype))
    d2 = d * d
    m2 = float(d2.sum(dtype=torch.float64)) / nf if nf else float("nan")
    m4 = float((d2 * d2).sum(dtype=torch.float64)) / nf if nf else float("nan")
    del d, d2
    kurt = m4 / (m2 * m2) - 3.0 if m2 > 0 else float("nan")
    a = xf.abs()
    chan_absmax = a.amax(dim=0)
    flat_a = a.reshape(-1)
    fin_a = flat_a[finite.reshape(-1)] if nf != n else flat_a
    # lower median of |x| over the finite values (the hidden state's typical magnitude)
    median_abs = float(torch.kthvalue(fin_a, (nf + 1) // 2).values) if nf else float("nan")
    massive_cut = max(MASSIVE_ABS, MASSIVE_RATIO * median_abs)
    k = min(top_k, n)
    top_i = torch.topk(flat_a, k).indices
    cols = x.shape[1]
    signed = xf.reshape(-1)[top_i].tolist()
    top = [
        (int(i) // cols, int(i) % cols, float(v))
        for i, v in zip(top_i.tolist(), signed, strict=True)
    ]
    lo, hi = torch.aminmax(xf) if nf else (torch.tensor(math.nan), torch.tensor(math.nan))
    return TensorStats(
        numel=n,
        min=float(lo),
        max=float(hi),
        mean=mean,
        std=math.sqrt(m2),
        absmax=float(chan_absmax.max()),
        l2=math.sqrt(float((xf * xf).sum(dtype=torch.float64))),
        nan_count=nan_count,
        inf_count=inf_count,
        kurtosis=kurt,
        over6_count=int((a > OVER_THRESHOLD).sum()),
        median_abs=median_abs,
        massive_count=int((a > massive_cut).sum()),
        channel_absmax=chan_absmax.tolist(),
        channel_mean_abs=(a.sum(dim=0, dtype=torch.float64) / x.shape[0]).tolist(),
        token_absmax=a.amax(dim=1).tolist(),
        top=top,
    )
