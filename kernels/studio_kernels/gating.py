"""MoE gating in Triton: softmax over router logits, top-k, renormalise (as seed 002's topk.py)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _topk_softmax_kernel(
    logits_ptr, ids_ptr, weights_ptr, E,
    TOPK: tl.constexpr, BLOCK_E: tl.constexpr, RENORM: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_E)
    mask = offs < E
    logits = tl.load(logits_ptr + row * E + offs, mask=mask, other=-float("inf")).to(tl.float32)
    p = tl.exp(logits - tl.max(logits, axis=0))
    p = tl.where(mask, p, 0.0)
    p = p / tl.sum(p, axis=0)
    # First pass: the sum of the selected probabilities (for renormalisation).
    cur = tl.where(mask, p, -1.0)
    total = 0.0
    for _ in tl.static_range(TOPK):
        v = tl.max(cur, axis=0)
        i = tl.argmax(cur, axis=0)  # ties: the lowest index
        total += v
        cur = tl.where(offs == i, -1.0, cur)
    denom = total if RENORM else 1.0
    # Second pass: the same selection in descending order, stored.
    cur = tl.where(mask, p, -1.0)
    for k in tl.static_range(TOPK):
        v = tl.max(cur, axis=0)
        i = tl.argmax(cur, axis=0)
        tl.store(ids_ptr + row * TOPK + k, i.to(tl.int32))
        tl.store(weights_ptr + row * TOPK + k, v / denom)
        cur = tl.where(offs == i, -1.0, cur)


def topk_softmax(
    logits: torch.Tensor, topk: int, renormalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int32 [B, K], weights fp32 [B, K]) in descending probability order."""
    rows, num_experts = logits.shape
    if not 0 < topk <= num_experts:
        raise ValueError(f"top-k {topk} must lie in [1, {num_experts}]")
    ids = torch.empty((rows, topk), dtype=torch.int32, device=logits.device)
    weights = torch.empty((rows, topk), dtype=torch.float32, device=logits.device)
    _topk_softmax_kernel[(rows,)](
        logits.contiguous(), ids, weights, num_experts,
        TOPK=topk, BLOCK_E=triton.next_power_of_2(num_experts), RENORM=renormalize,
    )  # fmt: skip
    return ids, weights


def topk_softmax_torch(
    logits: torch.Tensor, topk: int, renormalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same in torch (the baseline and the oracle of the Triton version)."""
    probs = torch.softmax(logits.float(), dim=-1)
    weights, ids = torch.topk(probs, topk, dim=-1)
    if renormalize:
        weights = weights / weights.sum(-1, keepdim=True)
    return ids.to(torch.int32), weights
