"""vLLM's parallel layers, re-implemented for CPU with the same class names and signatures.

Class names matter: dump tools record them (msit's model_tree.json, msprobe's
``Module.<path>.<Class>.forward.<n>``) and the studio's stitching rules key on them.
Weights are stored already sharded for this rank (see loader.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from studio_backend.engines.reference.parallel import all_gather_last, all_reduce, tp_rank, tp_size

DEFAULT_VOCAB_PADDING_SIZE = 64  # vLLM pads the vocabulary to a multiple of this


# --------------------------------------------------------------------------- forward context
@dataclass
class SeqSlice:
    """One request's tokens inside the flattened batch: cache slot and first position."""

    slot: int
    start_pos: int
    num_tokens: int


@dataclass
class ForwardContext:
    seqs: list[SeqSlice] = field(default_factory=list)


_CONTEXT: ForwardContext | None = None


@contextlib.contextmanager
def set_forward_context(ctx: ForwardContext) -> Iterator[None]:
    """Like vLLM's set_forward_context: attention reads batch metadata from here, not args."""
    global _CONTEXT
    prev, _CONTEXT = _CONTEXT, ctx
    try:
        yield
    finally:
        _CONTEXT = prev


def get_forward_context() -> ForwardContext:
    if _CONTEXT is None:
        raise RuntimeError("forward called outside set_forward_context")
    return _CONTEXT


# --------------------------------------------------------------------------- helpers
def divide(a: int, b: int) -> int:
    if a % b:
        raise ValueError(f"{a} is not divisible by {b}")
    return a // b


def pad_vocab(vocab: int, pad_to: int = DEFAULT_VOCAB_PADDING_SIZE) -> int:
    return ((vocab + pad_to - 1) // pad_to) * pad_to


# --------------------------------------------------------------------------- linear layers
class LinearBase(nn.Module):
    """Linear layers return ``(output, bias)`` like vLLM's (bias is None here)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.input_size_per_partition = in_features
        self.output_size_per_partition = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return F.linear(x, self.weight), None


class ReplicatedLinear(LinearBase):
    """Full weight on every rank (the MoE router ``mlp.gate``)."""


class GateLinear(ReplicatedLinear):
    """vLLM 0.32's MoE router: one object registered as ``mlp.gate`` and ``mlp.experts.gate``,
    called inside the experts (REFERENCE.md 2b)."""


class ColumnParallelLinear(LinearBase):
    """Output features split across ranks; no communication."""


class MergedColumnParallelLinear(ColumnParallelLinear):
    """``[gate_r | up_r]`` on rank r."""

    def __init__(self, input_size: int, output_sizes: list[int]) -> None:
        self.output_sizes = output_sizes
        super().__init__(input_size, sum(divide(o, tp_size()) for o in output_sizes))


class QKVParallelLinear(ColumnParallelLinear):
    """``[q_r | k_r | v_r]`` on rank r; KV heads replicated when tp > num_kv_heads."""

    def __init__(
        self, hidden_size: int, head_size: int, total_num_heads: int, total_num_kv_heads: int
    ) -> None:
        tp = tp_size()
        self.head_size = head_size
        self.total_num_heads = total_num_heads
        self.total_num_kv_heads = total_num_kv_heads
        self.num_heads = divide(total_num_heads, tp)
        if tp >= total_num_kv_heads:
            self.num_kv_heads = 1
            self.num_kv_head_replicas = divide(tp, total_num_kv_heads)
        else:
            self.num_kv_heads = divide(total_num_kv_heads, tp)
            self.num_kv_head_replicas = 1
        out = (self.num_heads + 2 * self.num_kv_heads) * head_size
        super().__init__(hidden_size, out)


class RowParallelLinear(LinearBase):
    """Input features split across ranks; the partial products are all-reduced."""

    def __init__(self, input_size: int, output_size: int, reduce_results: bool = True) -> None:
        super().__init__(divide(input_size, tp_size()), output_size)
        self.reduce_results = reduce_results

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        out = F.linear(x, self.weight)
        if self.reduce_results and tp_size() > 1:
            out = all_reduce(out)
        return out, None


# --------------------------------------------------------------------------- norms, rope, act
class RMSNorm(nn.Module):
    """vLLM's RMSNorm: with a residual it adds first and returns ``(normed, residual)``."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.variance_epsilon = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        orig_dtype = x.dtype
        x = x.float()
        if residual is not None:
            x = x + residual.float()
            residual = x.to(orig_dtype)
        variance = x.pow(2).mean(dim=-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        x = x.to(orig_dtype) * self.weight
        return x if residual is None else (x, residual)


class RotaryEmbedding(nn.Module):
    """Neox-style rotary embedding over ``positions`` (vLLM's get_rope for Qwen3)."""

    def __init__(
        self, head_size: int, max_position: int, base: float, in_place: bool = False
    ) -> None:
        super().__init__()
        self.head_size = head_size
        self.in_place = in_place  # current vLLM rotates q and k in place (REFERENCE.md 2b)
        inv_freq = 1.0 / (
            base ** (torch.arange(0, head_size, 2, dtype=torch.int64).float() / head_size)
        )
        t = torch.arange(max_position, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        self.register_buffer(
            "cos_sin_cache", torch.cat([freqs.cos(), freqs.sin()], dim=-1), persistent=False
        )

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.view(x.shape[0], -1, self.head_size)
        x1, x2 = x.chunk(2, dim=-1)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        out = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)
        return out.reshape(shape)

    def forward(
        self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos_sin_cache[positions].chunk(2, dim=-1)
        cos, sin = cos.to(query.dtype), sin.to(query.dtype)
        q, k = self._rotate(query, cos, sin), self._rotate(key, cos, sin)
        if self.in_place:
            query.copy_(q)
            key.copy_(k)
            return query, key
        return q, k


class SiluAndMul(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1] // 2
        return F.silu(x[..., :d]) * x[..., d:]


# --------------------------------------------------------------------------- attention
class Attention(nn.Module):
    """Causal attention with a per-request KV cache (this rank's heads only)."""

    def __init__(self, num_heads: int, head_size: int, scale: float, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_size = head_size
        self.scale = scale
        self.num_kv_heads = num_kv_heads
        self.kv_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # Optional DSA top-k selection, off by default: (seq, token slice, total) -> bool
        # [tokens, total] of the keys each query may attend to (studio_backend/dsa/engine_hook.py).
        self.token_selector: Callable[[SeqSlice, slice, int], torch.Tensor] | None = None

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx = get_forward_context()
        q = query.view(-1, self.num_heads, self.head_size)
        k = key.view(-1, self.num_kv_heads, self.head_size)
        v = value.view(-1, self.num_kv_heads, self.head_size)
        out = torch.empty_like(q)
        offset = 0
        for seq in ctx.seqs:
            sl = slice(offset, offset + seq.num_tokens)
            offset += seq.num_tokens
            past = self.kv_cache.get(seq.slot)
            if past is None or seq.start_pos == 0:
                ks, vs = k[sl], v[sl]
            else:
                ks, vs = torch.cat([past[0], k[sl]]), torch.cat([past[1], v[sl]])
            self.kv_cache[seq.slot] = (ks, vs)
            rep = self.num_heads // self.num_kv_heads
            kk = ks.repeat_interleave(rep, dim=1).transpose(0, 1)  # [heads, S, d]
            vv = vs.repeat_interleave(rep, dim=1).transpose(0, 1)
            qq = q[sl].transpose(0, 1)  # [heads, T, d]
            scores = torch.matmul(qq.float(), kk.float().transpose(1, 2)) * self.scale
            total = ks.shape[0]
            qpos = torch.arange(seq.start_pos, seq.start_pos + seq.num_tokens).unsqueeze(1)
            mask = torch.arange(total).unsqueeze(0) > qpos
            if self.token_selector is not None:
                mask = mask | ~self.token_selector(seq, sl, total)
            scores = scores.masked_fill(mask, float("-inf"))
            probs = torch.softmax(scores, dim=-1).to(q.dtype)
            out[sl] = torch.matmul(probs, vv).transpose(0, 1)
        return out.reshape(out.shape[0], -1)

    def free(self, slots: list[int] | None = None) -> None:
        if slots is None:
            self.kv_cache.clear()
        for s in slots or []:
            self.kv_cache.pop(s, None)


# --------------------------------------------------------------------------- vocab
class VocabParallelEmbedding(nn.Module):
    """Rows of the (padded) vocabulary split across ranks; masked lookup + all-reduce."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.org_vocab_size = num_embeddings
        self.num_embeddings_padded = pad_vocab(num_embeddings)
        self.num_embeddings_per_partition = divide(self.num_embeddings_padded, tp_size())
        self.vocab_start_index = tp_rank() * self.num_embeddings_per_partition
        self.vocab_end_index = self.vocab_start_index + self.num_embeddings_per_partition
        self.weight = nn.Parameter(
            torch.zeros(self.num_embeddings_per_partition, embedding_dim), requires_grad=False
        )

    def forward(self, input_: torch.Tensor) -> torch.Tensor:
        if tp_size() == 1:
            return F.embedding(input_, self.weight)
        mask = (input_ < self.vocab_start_index) | (input_ >= self.vocab_end_index)
        local = (input_ - self.vocab_start_index).masked_fill(mask, 0)
        out = F.embedding(local, self.weight).masked_fill(mask.unsqueeze(-1), 0)
        return all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    """The output projection; vLLM never calls its forward, LogitsProcessor uses the weight."""

    def forward(self, input_: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("LMHead's weights should be used in the sampler.")


class LogitsProcessor(nn.Module):
    """hidden @ lm_head.T on each rank's vocab slice, gathered and trimmed to the vocab."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.org_vocab_size = vocab_size

    def forward(self, lm_head: ParallelLMHead, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden_states, lm_head.weight)
        logits = all_gather_last(logits)
        return logits[..., : self.org_vocab_size]
