"""DeepSeek-V3.2 lightning indexer in plain torch, and a tiny sparse-attention LM that uses it.

Indexer (DeepSeek-V3.2-Exp ``inference/model.py``, class ``Indexer``)::

    q = wq_b(q_in)            -> [b, s, H, D]   (RoPE, not interleaved, on the first rope_dim dims)
    k = LayerNorm(wk(x))      -> [b, s, D]      one key per token shared by all indexer heads
    w = weights_proj(x) * H**-0.5 * D**-0.5
    I[t, s] = sum_h w[t, h] * ReLU(q[t, h] . k[s])      (+ causal mask in prefill)
    topk(I, min(index_topk, end_pos))

The original also applies a Hadamard rotation (orthogonal: dot products unchanged) and FP8
quantisation of q and k before scoring; this CPU reference keeps full precision.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# (layer_id, start_pos, end_pos, topk_indices [b, s, k], topk_scores [b, s, k])
TopkHook = Callable[[int, int, int, torch.Tensor, torch.Tensor], None]
# the same, first given the batch row the call belongs to
RowTopkHook = Callable[[int, int, int, int, torch.Tensor, torch.Tensor], None]


def rope_cos_sin(positions: torch.Tensor, dim: int, theta: float = 10000.0):
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    ang = positions.float()[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Non-interleaved RoPE on the last dim of ``x`` ([..., s, (heads,) dim]) for s positions."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    shape = [1] * x.dim()
    s_axis = 1  # [b, s, ...]
    shape[s_axis] = cos.shape[0]
    shape[-1] = half
    c, s = cos.reshape(shape), sin.reshape(shape)
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


class LightningIndexer(nn.Module):
    """Scores every cached token for each query and returns the top-k token indices."""

    def __init__(
        self,
        dim: int,
        n_heads: int = 8,
        head_dim: int = 32,
        rope_dim: int = 16,
        index_topk: int = 2048,
        q_in_dim: int | None = None,
        max_batch: int = 8,
        max_len: int = 4096,
    ) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.rope_dim = n_heads, head_dim, rope_dim
        self.index_topk = index_topk
        self.wq_b = nn.Linear(q_in_dim or dim, n_heads * head_dim, bias=False)
        self.wk = nn.Linear(dim, head_dim, bias=False)
        self.k_norm = nn.LayerNorm(head_dim)
        self.weights_proj = nn.Linear(dim, n_heads, bias=False)
        self.softmax_scale = head_dim**-0.5
        self.register_buffer("k_cache", torch.zeros(max_batch, max_len, head_dim), persistent=False)

    def _rope(self, t: torch.Tensor, start_pos: int) -> torch.Tensor:
        pos = torch.arange(start_pos, start_pos + t.shape[1])
        cos, sin = rope_cos_sin(pos, self.rope_dim)
        pe, nope = t[..., : self.rope_dim], t[..., self.rope_dim :]
        return torch.cat([apply_rope(pe, cos, sin), nope], dim=-1)

    def scores(
        self, x: torch.Tensor, start_pos: int, q_in: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Index scores ``[b, s, end_pos]`` (causal mask applied); caches this chunk's keys."""
        b, s, _ = x.shape
        end = start_pos + s
        q = self.wq_b(x if q_in is None else q_in).view(b, s, self.n_heads, self.head_dim)
        q = self._rope(q, start_pos)
        k = self._rope(self.k_norm(self.wk(x)), start_pos)
        self.k_cache[:b, start_pos:end] = k
        w = self.weights_proj(x.float()) * self.n_heads**-0.5 * self.softmax_scale
        logits = torch.einsum("bthd,bsd->btsh", q.float(), self.k_cache[:b, :end].float())
        score = torch.einsum("btsh,bth->bts", F.relu(logits), w)
        if s > 1:
            causal = torch.full((s, end), float("-inf")).triu(start_pos + 1)
            score = score + causal
        return score

    def score_seq(
        self, x: torch.Tensor, start_pos: int, k_prev: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sequence without the batch cache: x ``[T, dim]``, cached keys ``[start_pos, D]``
        -> (scores ``[T, start_pos + T]`` with the causal mask, all keys)."""
        t = x.shape[0]
        x = x.float()[None]
        q = self._rope(self.wq_b(x).view(1, t, self.n_heads, self.head_dim), start_pos)
        k_new = self._rope(self.k_norm(self.wk(x)), start_pos)[0]
        keys = k_new if k_prev is None or start_pos == 0 else torch.cat([k_prev, k_new])
        w = self.weights_proj(x) * self.n_heads**-0.5 * self.softmax_scale
        logits = torch.einsum("bthd,sd->btsh", q, keys)
        score = torch.einsum("btsh,bth->bts", F.relu(logits), w)[0]
        end = start_pos + t
        if t > 1:
            score = score + torch.full((t, end), float("-inf")).triu(start_pos + 1)
        return score, keys

    def forward(
        self, x: torch.Tensor, start_pos: int, q_in: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-k indices ``[b, s, k]``, their scores); ``k = min(index_topk, end_pos)``."""
        score = self.scores(x, start_pos, q_in)
        k = min(self.index_topk, start_pos + x.shape[1])
        vals, idx = score.topk(k, dim=-1)
        return idx, vals


@dataclass(frozen=True)
class TinyConfig:
    vocab: int = 256  # byte-level tokens
    dim: int = 128
    layers: int = 4
    heads: int = 4
    indexer_heads: int = 8
    indexer_head_dim: int = 32
    indexer_rope_dim: int = 16
    index_topk: int = 64
    max_batch: int = 8
    max_len: int = 4096
    seed: int = 0


class SparseAttention(nn.Module):
    """Causal multi-head attention restricted to the indexer's top-k tokens (DSA)."""

    def __init__(self, cfg: TinyConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id, self.h, self.hd = layer_id, cfg.heads, cfg.dim // cfg.heads
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.o = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.indexer = LightningIndexer(
            cfg.dim, cfg.indexer_heads, cfg.indexer_head_dim, cfg.indexer_rope_dim,
            cfg.index_topk, max_batch=cfg.max_batch, max_len=cfg.max_len,
        )  # fmt: skip
        shape = (cfg.max_batch, cfg.max_len, cfg.heads, self.hd)
        self.register_buffer("k_cache", torch.zeros(shape), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape), persistent=False)

    def forward(
        self, x: torch.Tensor, start_pos: int, hook: TopkHook | None = None
    ) -> torch.Tensor:
        b, s, d = x.shape
        end = start_pos + s
        q, k, v = self.qkv(x).view(b, s, 3, self.h, self.hd).unbind(2)
        cos, sin = rope_cos_sin(torch.arange(start_pos, end), self.hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        self.k_cache[:b, start_pos:end], self.v_cache[:b, start_pos:end] = k, v
        idx, vals = self.indexer(x, start_pos)
        if hook is not None:
            hook(self.layer_id, start_pos, end, idx, vals)
        # -inf everywhere except the selected tokens (which the indexer keeps causal)
        allowed = torch.full((b, s, end), float("-inf")).scatter(-1, idx, 0.0)
        if s > 1:  # top-k over a prefill row can include masked (future) tokens: mask them again
            allowed = allowed + torch.full((s, end), float("-inf")).triu(start_pos + 1)
        att = torch.einsum("bthd,bshd->bhts", q, self.k_cache[:b, :end]) / math.sqrt(self.hd)
        att = (att + allowed[:, None]).softmax(-1)
        out = torch.einsum("bhts,bshd->bthd", att, self.v_cache[:b, :end]).reshape(b, s, d)
        return self.o(out)


class TinySparseLM(nn.Module):
    """A small random-init decoder whose every layer uses DSA (for traces, not for text)."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.emb = nn.Embedding(cfg.vocab, cfg.dim)
        self.attn = nn.ModuleList(SparseAttention(cfg, i) for i in range(cfg.layers))
        self.mlp = nn.ModuleList(
            nn.Sequential(
                nn.Linear(cfg.dim, 2 * cfg.dim), nn.SiLU(), nn.Linear(2 * cfg.dim, cfg.dim)
            )
            for _ in range(cfg.layers)
        )
        self.norm1 = nn.ModuleList(nn.RMSNorm(cfg.dim) for _ in range(cfg.layers))
        self.norm2 = nn.ModuleList(nn.RMSNorm(cfg.dim) for _ in range(cfg.layers))
        self.head = nn.Linear(cfg.dim, cfg.vocab, bias=False)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, start_pos: int, hook: TopkHook | None = None):
        h = self.emb(tokens)
        for i in range(self.cfg.layers):
            h = h + self.attn[i](self.norm1[i](h), start_pos, hook)
            h = h + self.mlp[i](self.norm2[i](h))
        return self.head(h[:, -1])


def generate(
    model: TinySparseLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    hook: RowTopkHook | None = None,
    on_step: Callable[[int, int | None], None] | None = None,
) -> list[list[int]]:
    """Greedy decode of a batch of prompts (left-aligned, each prefilled separately).

    ``hook(row, layer, start, end, idx, scores)`` sees every decode layer's top-k; ``on_step(pos, None)`` runs before and
    ``on_step(pos, wall_us)`` after each batched decode step (the tracer's step timing).
    """
    b = len(prompts)
    out: list[list[int]] = [[] for _ in range(b)]
    # Prefill one prompt at a time into its own batch row (no trace: decode only).
    lens = [len(p) for p in prompts]
    last = []
    for i, p in enumerate(prompts):
        logits = _forward_row(model, i, torch.tensor([list(p)]), 0, None)
        last.append(int(logits.argmax(-1)))
    # Decode in lock-step; rows with shorter prompts are padded by decoding at their own pos.
    for step in range(max_new_tokens):
        pos = max(lens) + step
        if on_step:
            on_step(pos, None)
        t0 = time.perf_counter()
        nxt = []
        for i in range(b):
            cur = lens[i] + step
            logits = _forward_row(model, i, torch.tensor([[last[i]]]), cur, hook)
            out[i].append(last[i])
            nxt.append(int(logits.argmax(-1)))
        last = nxt
        if on_step:
            on_step(pos, int((time.perf_counter() - t0) * 1e6))
    return out


def _forward_row(
    model: TinySparseLM, row: int, tokens: torch.Tensor, start: int, hook: RowTopkHook | None
) -> torch.Tensor:
    """Run one sequence in cache row ``row`` (caches are indexed by batch position)."""
    row_hook = None
    if hook is not None:

        def row_hook(layer: int, s: int, e: int, idx: torch.Tensor, vals: torch.Tensor) -> None:
            hook(row, layer, s, e, idx, vals)

    # Views of the caches starting at this row keep each request's KV separate.
    saved = []
    for attn in model.attn:
        saved.append((attn.k_cache, attn.v_cache, attn.indexer.k_cache))
        attn.k_cache, attn.v_cache = attn.k_cache[row:], attn.v_cache[row:]
        attn.indexer.k_cache = attn.indexer.k_cache[row:]
    try:
        return model(tokens, start, row_hook)
    finally:
        for attn, (k, v, ik) in zip(model.attn, saved, strict=True):
            attn.k_cache, attn.v_cache, attn.indexer.k_cache = k, v, ik
