"""FlatQuant's Kronecker transform as ``torch_npu.npu_kronecker_quant`` applies it.

Semantics (torch_npu docs, Ascend op-plugin ``torch_npu-npu_kronecker_quant.md``): ``x`` is
``[K, M, N]``, ``kronecker_p1`` ``[M, M]``, ``kronecker_p2`` ``[N, N]``; the op computes
``x' = x @ P2`` then ``x'' = P1 @ x'`` and quantizes ``x''``. An msit api-mode dump of the op holds
``input_0`` (activation), ``input_1`` (P1) and ``input_2`` (P2). The activation may be dumped as
``[K, M, N]`` or flattened ``[tokens, M*N]``; both are handled and the result is returned in the
activation's own layout. For a row vector this is ``vec(x'') = vec(x) (P1^T kron P2)``.

FlatQuant's reference code (and the studio's CPU stand-in for the op) applies the left factor
transposed, ``P1^T @ x @ P2``. Both conventions are offered (``left_transposed``);
``detect_convention`` picks the one that reproduces the op's own dumped quantized output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from studio_backend.analysis.outliers import kurtosis
from studio_backend.errors import InputError


def apply(
    x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, *, left_transposed: bool = False
) -> torch.Tensor:
    """``P1 @ x @ P2`` (or ``P1^T @ x @ P2``) per token, in float32, with ``x``'s shape."""
    m, n = p1.shape[0], p2.shape[0]
    if p1.shape != (m, m) or p2.shape != (n, n):
        raise InputError(
            "kronecker", f"P1 {tuple(p1.shape)} and P2 {tuple(p2.shape)} must be square"
        )
    fits_3d = x.ndim >= 3 and tuple(x.shape[-2:]) == (m, n)
    if not fits_3d and x.shape[-1] != m * n:
        raise InputError("kronecker", f"activation {tuple(x.shape)} does not match M*N = {m}*{n}")
    shape = x.shape
    t = x.float().reshape(-1, m, n)
    left = p1.float().T if left_transposed else p1.float()
    out = left @ t @ p2.float()
    return out.reshape(shape)


@dataclass(frozen=True)
class KroneckerStats:
    absmax_before: float
    absmax_after: float
    kurtosis_before: float
    kurtosis_after: float


def stats(before: torch.Tensor, after: torch.Tensor) -> KroneckerStats:
    """Absmax and kurtosis of the activation before and after the transform."""
    return KroneckerStats(
        absmax_before=float(before.float().abs().max()),
        absmax_after=float(after.float().abs().max()),
        kurtosis_before=float(kurtosis(before.reshape(-1, before.shape[-1]))),
        kurtosis_after=float(kurtosis(after.reshape(-1, after.shape[-1]))),
    )


def as_tokens(x: torch.Tensor) -> torch.Tensor:
    """``[tokens, M*N]`` layout for plotting (a ``[K, M, N]`` activation is flattened per token)."""
    return x.reshape(x.shape[0], -1) if x.ndim >= 3 else x


def detect_convention(
    x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, q: torch.Tensor, scale: torch.Tensor
) -> bool | None:
    """Which left-factor convention reproduces the op's outputs ``q`` (ints) and per-token
    ``scale``: True = ``P1^T``, False = ``P1``, None = neither (e.g. int4 packed in int32)."""
    if q.is_floating_point() or q.numel() != x.numel() or scale.numel() != q.shape[0]:
        return None
    best, share_best = None, 0.0
    for transposed in (False, True):
        y = apply(x, p1, p2, left_transposed=transposed).reshape(q.shape[0], -1)
        err = (y / scale.float().reshape(-1, 1) - q.reshape(q.shape[0], -1).float()).abs()
        share = float((err <= 0.5 + 1e-3).float().mean())  # rounding, plus the clamp below
        if share > share_best:
            best, share_best = transposed, share
    return best if share_best >= 0.99 else None
