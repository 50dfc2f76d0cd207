"""Synthetic top-k routings for kernel tests and benchmarks (seeded)."""

from __future__ import annotations

import torch

from studio_kernels.routing_modes import ROUTINGS


def make_routing(
    batch: int, topk: int, num_experts: int, mode: str = "uniform", *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids int32 [B, K], weights fp32 [B, K] summing to 1 per token); experts distinct per token.

    - ``disjoint``: tokens share no expert while ``B*K <= E`` (the most experts touched);
    - ``uniform``: each token draws K distinct experts uniformly;
    - ``skewed``: draws weighted by a Zipf law (``p ~ 1/(rank+1)^1.2``) over a seeded random
      expert order, so a few hot experts take most tokens.
    """
    if mode not in ROUTINGS:
        raise ValueError(f"routing {mode!r} is not one of {', '.join(ROUTINGS)}")
    if not 0 < topk <= num_experts:
        raise ValueError(f"top-k {topk} must lie in [1, {num_experts}]")
    gen = torch.Generator().manual_seed(seed)
    if mode == "disjoint":
        offset = int(torch.randint(0, num_experts, (1,), generator=gen))
        flat = (torch.arange(batch * topk) + offset) % num_experts
        ids = flat.reshape(batch, topk)
        if batch * topk > num_experts:  # wrap-around must stay distinct within a token
            ids = (
                torch.arange(topk) + (torch.arange(batch) * topk)[:, None] + offset
            ) % num_experts
    elif mode == "uniform":
        ids = torch.stack([torch.randperm(num_experts, generator=gen)[:topk] for _ in range(batch)])
    else:
        rank_p = 1.0 / (torch.arange(num_experts, dtype=torch.float64) + 1) ** 1.2
        perm = torch.randperm(num_experts, generator=gen)
        probs = torch.empty(num_experts, dtype=torch.float64)
        probs[perm] = rank_p
        ids = torch.multinomial(probs.expand(batch, -1), topk, replacement=False, generator=gen)
    logits = torch.randn((batch, topk), generator=gen)
    weights = torch.softmax(logits, dim=-1)
    return ids.to(torch.int32), weights.to(torch.float32)


def expected_touched_uniform(batch: int, topk: int, num_experts: int) -> float:
    """E[E_t] under uniform routing: ``E * (1 - (1 - K/E)^B)`` (REFERENCE.md section 7)."""
    return num_experts * (1 - (1 - topk / num_experts) ** batch)
