"""FlatQuant's Kronecker transform as ``torch_npu.npu_kronecker_quant`` applies it.

Semantics (torch_npu docs, Ascend op-plugin ``torch_npu-npu_kronecker_quant.md``): ``x`` is
``[K, M, N]``, ``kronecker_p1`` ``[M, M]``, ``kronecker_p2`` ``[N, N]``; the op computes
``x' = x @ P2`` then ``x'' = P1 @ x'`` and quantizes ``x''``. An msit api-mode dump of the op holds
``input_0`` (activation), ``input_1`` (P1) and ``input_2`` (P2). The activation may be dumped as
``[K, M, N]`` or flattened ``[tokens, M*N]``; both are handled and the result is returned in the
activation's own layout. For a row vector this is ``vec(x'') = vec(x) (P1^T kron P2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backend.analysis.outliers import kurtosis
from backend.errors import InputError


def apply(x: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """``P1 @ x @ P2`` per token, in float32, returned with ``x``'s shape."""
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
    out = p1.float() @ t @ p2.float()
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
