"""Top-k routing from router logits, as vLLM's fused_topk and transformers' Qwen3-MoE router do.

``softmax(logits) -> top-k -> (renormalise over the k when norm_topk_prob)``, in float32.
vLLM layout: ``mlp.gate`` (ReplicatedLinear) outputs ``(logits, bias)``; transformers 5 layout:
``mlp.gate`` (the router) outputs ``(logits, topk_weights, topk_ids)``. Either way output 0 is
the ``[tokens, num_experts]`` logits, so one function serves both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Routing:
    """Per-token routing of one layer: expert ids and weights, both ``[tokens, k]``."""

    ids: np.ndarray
    weights: np.ndarray

    def counts(self, num_experts: int) -> np.ndarray:
        """Tokens routed to each expert (a token counts once per selected expert)."""
        return np.bincount(self.ids.reshape(-1), minlength=num_experts).astype(np.int64)


def route(logits: torch.Tensor | np.ndarray, top_k: int, norm_topk_prob: bool) -> Routing:
    """Route ``[tokens, experts]`` logits (any float dtype) to the top-k experts per token."""
    t = torch.as_tensor(logits).float()
    if t.ndim != 2:
        t = t.reshape(-1, t.shape[-1])
    if not 0 < top_k <= t.shape[-1]:
        raise ValueError(f"top_k={top_k} outside 1..{t.shape[-1]}")
    probs = torch.softmax(t, dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return Routing(ids=ids.numpy().astype(np.int64), weights=weights.numpy())
