"""Statistics of one tensor (numpy-checked in tests).

Tensors are seen as ``[tokens, channels]``: the first ``token_dims`` dims are flattened into
tokens and the remaining dims into channels (``studio_backend/dumps/axis.py`` decides ``token_dims`` per
tensor: 2 for a Hugging Face ``[batch, seq, hidden]``; without it, the first dim is tokens and a
1-D tensor is one token). bf16/fp16 tensors (what dumps hold) get
their scalar statistics from a histogram of the 65536 bit patterns (one counting pass, exact
float64 moments); other dtypes from float32 residuals summed in float64. NaN and Inf are
counted, not propagated.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from studio_backend.dumps import fused

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


def as_2d(t: torch.Tensor, token_dims: int | None = None) -> torch.Tensor:
    if token_dims is not None:
        from studio_backend.dumps.axis import to_matrix

        return to_matrix(t, token_dims)
    if t.dim() == 0:
        return t.reshape(1, 1)
    if t.dim() == 1:
        return t.reshape(1, -1)
    # explicit width: reshape(0, -1) is ambiguous (an MoE expert that got no tokens is [0, H])
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


@functools.cache
def _patterns(dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For a 16-bit float type: (finite pattern ids, their float64 values, |values|, the order
    of those by |value|), indexed by the pattern read as uint16."""
    vals = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(dtype).double().numpy()
    ids = np.flatnonzero(np.isfinite(vals))
    v = vals[ids]
    return ids, v, np.abs(v), np.argsort(np.abs(v), kind="stable")


def _compute_16bit(t: torch.Tensor, top_k: int, token_dims: int | None) -> TensorStats | None:
    """bf16/fp16: the scalar statistics from a histogram of the 65536 bit patterns.

    One numba pass (``fused.hist_reduce``) counts the patterns and takes the per-channel and
    per-token reductions together; the histogram replaces the moment, min/max, threshold and
    median passes, and the moments are exact float64 sums over the distinct values. None if a
    value is not finite.
    """
    x = as_2d(t, token_dims)
    bits = fused.bits16(x)
    if bits is None:
        x = x.contiguous()
        bits = fused.bits16(x)
    counts, chan_absmax, chan_sum_abs, token_absmax = fused.hist_reduce(bits, t.dtype)
    ids, vals, absv, order = _patterns(t.dtype)
    c = counts[ids].astype(np.float64)
    n = int(counts.sum())
    if int(c.sum()) != n:
        return None  # NaN or Inf present: the float32 path counts them
    present = c > 0
    cp, vp = c[present], vals[present]
    mean = float(cp @ vp) / n
    d2 = (vp - mean) ** 2
    m2 = float(cp @ d2) / n
    m4 = float(cp @ (d2 * d2)) / n
    cum = np.cumsum(c[order])
    median_abs = float(absv[order][int(np.searchsorted(cum, (n + 1) // 2))])
    massive_cut = max(MASSIVE_ABS, MASSIVE_RATIO * median_abs)
    # float64 sums rounded once to float32 (the float32 vector the other dtypes give)
    chan_mean_abs = (chan_sum_abs / x.shape[0]).astype(np.float32)
    return TensorStats(
        numel=n, min=float(vp.min()), max=float(vp.max()), mean=mean, std=math.sqrt(m2),
        absmax=float(absv[present].max()), l2=math.sqrt(float(cp @ (vp * vp))), nan_count=0,
        inf_count=0, kurtosis=m4 / (m2 * m2) - 3.0 if m2 > 0 else float("nan"),
        over6_count=int(c[absv > OVER_THRESHOLD].sum()), median_abs=median_abs,
        massive_count=int(c[absv > massive_cut].sum()), channel_absmax=chan_absmax.tolist(),
        channel_mean_abs=chan_mean_abs.tolist(), token_absmax=token_absmax.tolist(),
        top=_top(x, torch.from_numpy(token_absmax), top_k),
    )  # fmt: skip


def _top(x: torch.Tensor, token_absmax: torch.Tensor, top_k: int) -> list[tuple[int, int, float]]:
    """The top-k |x| entries: they lie in the k tokens with the largest maxima."""
    k = min(top_k, x.numel())
    rows = torch.topk(token_absmax, min(k, x.shape[0])).indices
    sub = x[rows].abs().reshape(-1).float()
    sub_i = torch.topk(sub, k).indices
    cols = x.shape[1]
    tok = rows[sub_i // cols].tolist()
    ch = (sub_i % cols).tolist()
    return [(int(r), int(c), float(x[r, c])) for r, c in zip(tok, ch, strict=True)]


def compute(t: torch.Tensor, top_k: int = TOP_K, token_dims: int | None = None) -> TensorStats:
    """All statistics of ``t`` (any dtype; integers and bf16 are widened to float32), viewed
    with its first ``token_dims`` dims as tokens.

    Central moments come from float32 residuals summed in float64 (accurate without a float64
    copy of the tensor). A finite sum proves there is no NaN/Inf, so the masks are only built
    when needed.
    """
    if t.dtype in (torch.bfloat16, torch.float16) and t.numel():
        fast = _compute_16bit(t, top_k, token_dims)
        if fast is not None:
            return fast
    x = as_2d(t, token_dims).to(torch.float32)
    n = x.numel()
    if n == 0:
        nan = float("nan")
        return TensorStats(0, nan, nan, nan, nan, nan, 0.0, 0, 0, nan, 0, nan, 0, [], [], [], [])
    s1 = float(x.sum())  # torch sums float32 pairwise: ~1e-7 relative
    nan_count = inf_count = 0
    xf, nf = x, n
    if not math.isfinite(s1):
        finite = torch.isfinite(x)
        nf = int(finite.sum())
        nan_count = int(torch.isnan(x).sum())
        inf_count = n - nf - nan_count
        xf = torch.where(finite, x, torch.zeros((), dtype=x.dtype))
        s1 = float(xf.sum())
    mean = s1 / nf if nf else float("nan")
    d = xf - mean
    if nf != n:
        d = torch.where(finite, d, torch.zeros((), dtype=d.dtype))
    d2 = d * d
    m2 = float(d2.sum()) / nf if nf else float("nan")
    m4 = float((d2 * d2).sum()) / nf if nf else float("nan")
    del d, d2
    kurt = m4 / (m2 * m2) - 3.0 if m2 > 0 else float("nan")
    a = xf.abs()
    chan_absmax = a.amax(dim=0)
    token_absmax = a.amax(dim=1)
    # lower median of |x| over the finite values (the hidden state's typical magnitude)
    if nf:
        fin_a = a.reshape(-1)[finite.reshape(-1)] if nf != n else a.reshape(-1)
        median_abs = float(torch.kthvalue(fin_a, (nf + 1) // 2).values)
    else:
        median_abs = float("nan")
    massive_cut = max(MASSIVE_ABS, MASSIVE_RATIO * median_abs)
    top = _top(xf, token_absmax, top_k)
    lo, hi = torch.aminmax(xf) if nf else (torch.tensor(math.nan), torch.tensor(math.nan))
    return TensorStats(
        numel=n,
        min=float(lo),
        max=float(hi),
        mean=mean,
        std=math.sqrt(m2),
        absmax=float(chan_absmax.max()),
        l2=math.sqrt(nf * (m2 + mean * mean)) if nf else 0.0,  # sum x^2 = n (var + mean^2)
        nan_count=nan_count,
        inf_count=inf_count,
        kurtosis=kurt,
        over6_count=int((a > OVER_THRESHOLD).sum()),
        median_abs=median_abs,
        massive_count=int((a > massive_cut).sum()),
        channel_absmax=chan_absmax.tolist(),
        channel_mean_abs=(a.sum(dim=0) / x.shape[0]).tolist(),
        token_absmax=token_absmax.tolist(),
        top=top,
    )
