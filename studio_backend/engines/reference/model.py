"""Qwen3-MoE with vLLM's module tree (vllm/model_executor/models/qwen3_moe.py).

Module paths: ``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{qkv_proj,
o_proj, q_norm, k_norm, rotary_emb, attn}, post_attention_layernorm, mlp.{gate, experts} or
mlp.{gate_up_proj, down_proj, act_fn}}``, ``model.norm``, ``lm_head``, ``logits_processor``.
Call conventions follow vLLM too (they decide what dump tools can see): decoder layers are
called positionally ``(positions, hidden_states, residual)``, attention and experts with
keyword arguments (so msit writes no input files for them).

Two layouts (``LAYOUTS``; REFERENCE.md 2 and 2b), chosen per model, default ``vllm``:
- ``vllm`` (current vLLM, 0.32): ``mlp.experts`` is a ``MoERunner`` whose output is already
  all-reduced; the router ``GateLinear`` is ONE object registered as ``mlp.gate`` and
  ``mlp.experts.gate`` and called inside the experts; ``rotary_emb`` is one object shared by
  every layer and rotates q and k in place.
- ``fused_moe`` (older vLLM, vllm-ascend releases): ``mlp.experts`` is a ``FusedMoE`` with
  ``reduce_results=False`` (partial sums, all-reduced by the block), ``mlp.gate`` a
  ``ReplicatedLinear`` called by the block, one ``rotary_emb`` per layer, out of place.
``STUDIO_REFERENCE_LAYOUT`` picks the layout where no caller names one.
"""

from __future__ import annotations

import torch
from torch import nn

from studio_backend.engines.reference.layers import (
    Attention,
    GateLinear,
    LogitsProcessor,
    MergedColumnParallelLinear,
    ParallelLMHead,
    QKVParallelLinear,
    ReplicatedLinear,
    RMSNorm,
    RotaryEmbedding,
    RowParallelLinear,
    SiluAndMul,
    VocabParallelEmbedding,
    divide,
)
from studio_backend.engines.reference.layout import resolve_layout
from studio_backend.engines.reference.moe import FusedMoE, MoERunner
from studio_backend.engines.reference.parallel import tp_size
from studio_backend.models.config import Qwen3MoeConfig


class Qwen3MoeMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(hidden_size, [intermediate_size] * 2)
        self.down_proj = RowParallelLinear(intermediate_size, hidden_size)
        self.act_fn = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, _ = self.gate_up_proj(x)
        x = self.act_fn(gate_up)
        x, _ = self.down_proj(x)
        return x


class Qwen3MoeSparseMoeBlock(nn.Module):
    def __init__(
        self, config: Qwen3MoeConfig, kronecker_observe: bool = False, layout: str = "vllm"
    ) -> None:
        super().__init__()
        self.tp_size = tp_size()
        self.layout = layout
        if layout == "vllm":
            # gate first: msit names a module registered twice after its LAST path
            # (mlp.experts.gate), msprobe after its first (mlp.gate), as with real vLLM 0.32
            self.gate: nn.Module = GateLinear(config.hidden_size, config.num_experts)
            self.experts: nn.Module = MoERunner(
                self.gate,  # type: ignore[arg-type]
                num_experts=config.num_experts,
                top_k=config.num_experts_per_tok,
                hidden_size=config.hidden_size,
                intermediate_size=config.moe_intermediate_size,
                renormalize=config.norm_topk_prob,
                kronecker_observe=kronecker_observe,
            )
            return
        self.experts = FusedMoE(
            num_experts=config.num_experts,
            top_k=config.num_experts_per_tok,
            hidden_size=config.hidden_size,
            intermediate_size=config.moe_intermediate_size,
            renormalize=config.norm_topk_prob,
            reduce_results=False,
            kronecker_observe=kronecker_observe,
        )
        self.gate = ReplicatedLinear(config.hidden_size, config.num_experts)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        orig_shape = hidden_states.shape
        hidden_states = hidden_states.view(-1, orig_shape[-1])
        if self.layout == "vllm":  # the runner routes and all-reduces itself
            final = self.experts(hidden_states=hidden_states, router_logits=hidden_states)
            return final.view(orig_shape)
        router_logits, _ = self.gate(hidden_states)
        final = self.experts(hidden_states=hidden_states, router_logits=router_logits)
        if self.tp_size > 1:
            final = self.experts.maybe_all_reduce_tensor_model_parallel(final)
        return final.view(orig_shape)


class Qwen3MoeAttention(nn.Module):
    def __init__(self, config: Qwen3MoeConfig, rotary_emb: RotaryEmbedding | None = None) -> None:
        super().__init__()
        tp = tp_size()
        self.head_dim = config.head_dim
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size,
            config.head_dim,
            config.num_attention_heads,
            config.num_key_value_heads,
        )
        self.num_heads = divide(config.num_attention_heads, tp)
        self.num_kv_heads = self.qkv_proj.num_kv_heads
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scaling = self.head_dim**-0.5
        self.o_proj = RowParallelLinear(
            config.num_attention_heads * self.head_dim, config.hidden_size
        )
        # vllm layout: one shared instance for every layer (vLLM's get_rope cache)
        self.rotary_emb = rotary_emb or RotaryEmbedding(
            self.head_dim, config.max_position_embeddings, config.rope_theta
        )
        self.attn = Attention(self.num_heads, self.head_dim, self.scaling, self.num_kv_heads)
        self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.qkv_proj(hidden_states)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        # Per-head q/k norms over views: dumps of q_norm's input carry the whole qkv storage.
        q_by_head = q.view(*q.shape[:-1], q.shape[-1] // self.head_dim, self.head_dim)
        q_by_head = self.q_norm(q_by_head)
        q = q_by_head.view(q.shape)
        k_by_head = k.view(*k.shape[:-1], k.shape[-1] // self.head_dim, self.head_dim)
        k_by_head = self.k_norm(k_by_head)
        k = k_by_head.view(k.shape)
        q, k = self.rotary_emb(positions, q, k)
        attn_output = self.attn(q, k, v)
        output, _ = self.o_proj(attn_output)
        return output


class Qwen3MoeDecoderLayer(nn.Module):
    def __init__(
        self,
        config: Qwen3MoeConfig,
        layer_idx: int,
        kronecker_observe: bool,
        layout: str = "vllm",
        rotary_emb: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        self.self_attn = Qwen3MoeAttention(config, rotary_emb)
        if config.is_moe_layer(layer_idx):
            self.mlp: nn.Module = Qwen3MoeSparseMoeBlock(config, kronecker_observe, layout)
        else:
            self.mlp = Qwen3MoeMLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self, positions: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden_states
            hidden_states = self.input_layernorm(hidden_states)
        else:
            hidden_states, residual = self.input_layernorm(hidden_states, residual)
        hidden_states = self.self_attn(positions=positions, hidden_states=hidden_states)
        hidden_states, residual = self.post_attention_layernorm(hidden_states, residual)
        hidden_states = self.mlp(hidden_states)
        return hidden_states, residual


class Qwen3MoeModel(nn.Module):
    def __init__(
        self, config: Qwen3MoeConfig, kronecker_observe: bool = False, layout: str = "vllm"
    ) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        rope = None
        if layout == "vllm":
            rope = RotaryEmbedding(
                config.head_dim, config.max_position_embeddings, config.rope_theta, in_place=True
            )
        self.layers = nn.ModuleList(
            Qwen3MoeDecoderLayer(config, i, kronecker_observe, layout, rope)
            for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embed_tokens(input_ids)
        residual = None
        for layer in self.layers:
            hidden_states, residual = layer(positions, hidden_states, residual)
        hidden_states, _ = self.norm(hidden_states, residual)
        return hidden_states


class Qwen3MoeForCausalLM(nn.Module):
    def __init__(
        self, config: Qwen3MoeConfig, kronecker_observe: bool = False, layout: str | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.layout = resolve_layout(layout)
        self.model = Qwen3MoeModel(config, kronecker_observe, self.layout)
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size)
        self.logits_processor = LogitsProcessor(config.vocab_size)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, positions)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.logits_processor(self.lm_head, hidden_states)

    def attention_layers(self) -> list[Attention]:
        return [m for m in self.modules() if isinstance(m, Attention)]
