"""Torch paths of the W4A16 MoE layer (any device torch runs on).

- :func:`moe_reference`: the "native" path that seed 002 measures against: dequantize every
  touched expert to fp16/bf16 in memory, then matmul (gate, up), SwiGLU, matmul (down) and a
  weighted sum. Weights cross memory three times (int4 read, fp16 write, fp16 read).
- :func:`moe_tiled_torch`: the fused kernel's algorithm in plain torch (K tiles dequantized
  into a small scratch that stays in cache, gate+up from one stacked weight, down with the
  routing weight). It is the honest CPU counterpart of the Triton kernel: on a machine without a
  GPU it is what "fused" means, and it is labelled as such in results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from studio_kernels.awq import dequantize_awq
from studio_kernels.experts import AwqExperts, FusedExperts


def _routing_groups(topk_ids: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(expert, token rows, top-k slots) for every touched expert, in expert order."""
    groups = []
    for e in torch.unique(topk_ids).tolist():
        tok, slot = torch.nonzero(topk_ids == e, as_tuple=True)
        groups.append((int(e), tok, slot))
    return groups


def moe_reference(
    x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, experts: AwqExperts
) -> torch.Tensor:
    """Dequantize-to-memory-then-matmul MoE layer; returns ``[B, H]`` in ``x.dtype``."""
    g = experts.group_size
    out = torch.zeros((x.shape[0], experts.hidden), dtype=torch.float32, device=x.device)
    for e, tok, slot in _routing_groups(topk_ids):
        wg = dequantize_awq(*experts.weight("gate", e), g, x.dtype)
        wu = dequantize_awq(*experts.weight("up", e), g, x.dtype)
        wd = dequantize_awq(*experts.weight("down", e), g, x.dtype)
        xe = x[tok]
        h = F.silu(xe @ wg) * (xe @ wu)
        y = (h @ wd).float() * topk_weights[tok, slot].float().unsqueeze(1)
        out.index_add_(0, tok, y)
    return out.to(x.dtype)


def _dequant_tile(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, k0: int, bk: int, g: int):
    """Fused-layout rows' columns ``[k0, k0+bk)`` as fp32 ``[N, bk]`` (bk a multiple of 8)."""
    words = q[:, k0 // 8 : (k0 + bk) // 8]
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=q.device)
    nib = ((words.unsqueeze(-1) >> shifts) & 0xF).reshape(q.shape[0], bk)
    groups = torch.arange(k0, k0 + bk, device=q.device) // g
    return (nib - z[:, groups].to(torch.int32)).float() * s[:, groups].float()


def moe_tiled_torch(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    experts: FusedExperts,
    block_k: int = 256,
) -> torch.Tensor:
    """The fused algorithm in torch, fp32 accumulation; returns ``[B, H]`` in ``x.dtype``."""
    g = experts.group_size
    hidden, inter = experts.hidden, experts.intermediate
    out = torch.zeros((x.shape[0], hidden), dtype=torch.float32, device=x.device)
    for e, tok, slot in _routing_groups(topk_ids):
        xe = x[tok].float()
        acc = torch.zeros((xe.shape[0], 2 * inter), dtype=torch.float32, device=x.device)
        for k0 in range(0, hidden, block_k):
            bk = min(block_k, hidden - k0)
            w = _dequant_tile(experts.w13_q[e], experts.w13_z[e], experts.w13_s[e], k0, bk, g)
            acc += xe[:, k0 : k0 + bk] @ w.t()
        h = F.silu(acc[:, :inter]) * acc[:, inter:]
        y = torch.zeros((xe.shape[0], hidden), dtype=torch.float32, device=x.device)
        for k0 in range(0, inter, block_k):
            bk = min(block_k, inter - k0)
            w = _dequant_tile(experts.w2_q[e], experts.w2_z[e], experts.w2_s[e], k0, bk, g)
            y += h[:, k0 : k0 + bk] @ w.t()
        out.index_add_(0, tok, y * topk_weights[tok, slot].float().unsqueeze(1))
    return out.to(x.dtype)
