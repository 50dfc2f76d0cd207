"""vLLM's MoE layers in both layouts the studio meets (REFERENCE.md sections 2 and 2b).

- ``MoERunner`` (current vLLM, 0.32): children ``gate`` (the router ``GateLinear``, the same
  object as the block's ``mlp.gate``) and ``routed_experts`` (weights only, never called as a
  module); called as ``experts(hidden_states=h, router_logits=h)``, it computes the router
  logits itself and ALL-REDUCES its output, so the block adds nothing.
- ``FusedMoE`` with ``reduce_results=False`` (older vLLM, vllm-ascend releases): each rank's
  output is a PARTIAL sum that the parent block all-reduces.
Both compute the same experts; weights are this rank's slice of the intermediate dimension:
``w13_weight`` ``[E, 2*I/tp, H]`` (gate rows then up rows), ``w2_weight`` ``[E, H, I/tp]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from studio_backend.engines.reference import kronecker
from studio_backend.engines.reference.layers import GateLinear, divide
from studio_backend.engines.reference.parallel import all_reduce, tp_size


def select_experts(
    router_logits: torch.Tensor, top_k: int, renormalize: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """vLLM's fused_topk: softmax in float32, top-k, optional renormalisation."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


def run_experts(
    hidden_states: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
) -> torch.Tensor:
    """This rank's share of every selected expert's output, weighted and summed per token."""
    out = torch.zeros_like(hidden_states)
    i = w2.shape[-1]
    for e in ids.unique().tolist():
        tok, which = torch.where(ids == e)
        gate_up = F.linear(hidden_states[tok], w13[e])
        act = F.silu(gate_up[:, :i]) * gate_up[:, i:]
        y = F.linear(act, w2[e])
        out.index_add_(0, tok, y * weights[tok, which, None].to(y.dtype))
    return out


class _ExpertWeights(nn.Module):
    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.intermediate_size_per_partition = i = divide(intermediate_size, tp_size())
        self.w13_weight = nn.Parameter(
            torch.empty(num_experts, 2 * i, hidden_size), requires_grad=False
        )
        self.w2_weight = nn.Parameter(torch.empty(num_experts, hidden_size, i), requires_grad=False)


class FusedMoE(_ExpertWeights):
    """Older vLLM: ``reduce_results=False``, the output is this rank's PARTIAL sum."""

    def __init__(
        self,
        num_experts: int,
        top_k: int,
        hidden_size: int,
        intermediate_size: int,
        renormalize: bool,
        reduce_results: bool = False,
        kronecker_observe: bool = False,
    ) -> None:
        super().__init__(num_experts, hidden_size, intermediate_size)
        self.global_num_experts = num_experts
        self.top_k = top_k
        self.renormalize = renormalize
        self.reduce_results = reduce_results
        self.kronecker = kronecker.KroneckerFactors(hidden_size) if kronecker_observe else None

    def select_experts(self, router_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return select_experts(router_logits, self.top_k, self.renormalize)

    def forward(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        _observe_kronecker(self.kronecker, hidden_states)
        weights, ids = self.select_experts(router_logits)
        out = run_experts(hidden_states, weights, ids, self.w13_weight, self.w2_weight)
        if self.reduce_results and tp_size() > 1:
            out = all_reduce(out)
        return out

    def maybe_all_reduce_tensor_model_parallel(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.reduce_results or tp_size() == 1 else all_reduce(x)


class RoutedExperts(_ExpertWeights):
    """The experts' weights under ``mlp.experts.routed_experts`` (vLLM never calls it)."""

    def forward(self, *_args: object) -> None:
        raise RuntimeError("RoutedExperts holds weights; MoERunner computes the experts")


class MoERunner(nn.Module):
    """Current vLLM's experts: router inside, output already all-reduced on every rank."""

    def __init__(
        self,
        gate: GateLinear,
        num_experts: int,
        top_k: int,
        hidden_size: int,
        intermediate_size: int,
        renormalize: bool,
        kronecker_observe: bool = False,
    ) -> None:
        super().__init__()
        self.gate = gate  # the same object as the block's ``gate``: registered twice
        self.routed_experts = RoutedExperts(num_experts, hidden_size, intermediate_size)
        self.global_num_experts = num_experts
        self.top_k = top_k
        self.renormalize = renormalize
        self.kronecker = kronecker.KroneckerFactors(hidden_size) if kronecker_observe else None

    @property
    def w13_weight(self) -> nn.Parameter:
        return self.routed_experts.w13_weight

    @property
    def w2_weight(self) -> nn.Parameter:
        return self.routed_experts.w2_weight

    def forward(self, hidden_states: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        # vLLM 0.32 passes the hidden states as ``router_logits`` and routes with its gate.
        del router_logits
        _observe_kronecker(self.kronecker, hidden_states)
        logits, _ = self.gate(hidden_states)
        weights, ids = select_experts(logits, self.top_k, self.renormalize)
        out = run_experts(hidden_states, weights, ids, self.w13_weight, self.w2_weight)
        return all_reduce(out) if tp_size() > 1 else out


def _observe_kronecker(factors: kronecker.KroneckerFactors | None, x: torch.Tensor) -> None:
    # FlatQuant-style activation quantization, OBSERVED only: the result is not used, so
    # numerics are unchanged; msit's api mode dumps its three inputs.
    if factors is not None:
        kronecker.npu_kronecker_quant(x, factors.left, factors.right)
