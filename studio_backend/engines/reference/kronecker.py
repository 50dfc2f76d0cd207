"""A CPU ``npu_kronecker_quant``: FlatQuant's activation transform + per-token quantization.

torch_npu's op takes the activation and two small transform matrices (left ``P1`` [M, M],
right ``P2`` [N, N] with M*N = hidden), computes ``P1^T X P2`` per token (the Kronecker
transform) and quantizes per token. msit's api mode wraps functions by attribute on a Python
module listed in ``hook_ops.HOOK_OPS``; callers therefore look the function up on THIS module at
call time (``kronecker.npu_kronecker_quant(...)``) so the dump hook sees the call and writes
``<module>.npu_kronecker_quant/input_0.pth`` (activation), ``input_1.pth`` (left),
``input_2.pth`` (right). Unlike the NPU op (int4 packed into int32) the values are returned
unpacked as int8 in the int4 range [-8, 7], with one float32 scale per token.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INT4_MAX = 7.0


def kron_dims(hidden: int) -> tuple[int, int]:
    """M, N with M*N = hidden and M the largest divisor not above sqrt(hidden)."""
    m = max(d for d in range(1, math.isqrt(hidden) + 1) if hidden % d == 0)
    return m, hidden // m


def npu_kronecker_quant(
    x: torch.Tensor,
    kronecker_p1: torch.Tensor,
    kronecker_p2: torch.Tensor,
    clip_ratio: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = kronecker_p1.shape[0], kronecker_p2.shape[0]
    xt = x.float().reshape(-1, m, n)
    y = torch.matmul(torch.matmul(kronecker_p1.float().T, xt), kronecker_p2.float())
    y = y.reshape(x.shape[0], -1)
    scale = (y.abs().amax(dim=-1, keepdim=True) * clip_ratio / INT4_MAX).clamp_min(1e-12)
    q = torch.clamp(torch.round(y / scale), -INT4_MAX - 1, INT4_MAX).to(torch.int8)
    return q, scale.squeeze(-1)


class KroneckerFactors(nn.Module):
    """Seeded random orthogonal left/right factors (FlatQuant learns them; here fixed)."""

    def __init__(self, hidden: int, seed: int = 0) -> None:
        super().__init__()
        m, n = kron_dims(hidden)
        g = torch.Generator().manual_seed(seed)
        left = torch.linalg.qr(torch.randn(m, m, generator=g))[0]
        right = torch.linalg.qr(torch.randn(n, n, generator=g))[0]
        self.register_buffer("left", left, persistent=False)
        self.register_buffer("right", right, persistent=False)
