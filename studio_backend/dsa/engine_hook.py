"""DSA on the reference engine: a lightning indexer per layer selects the attended tokens.

Off unless attached. ``attach_dsa(runner, tracer)`` gives every decoder layer of a
``studio_backend.engines.reference.runner.ModelRunner`` a seeded ``LightningIndexer`` fed by the layer's
attention input, sets the engine's optional ``Attention.token_selector`` (the one engine hook) so
attention sees only the top-k tokens, records decode selections with the tracer and times each
step through the runner's ``before_step`` / ``after_step``. ``detach()`` restores dense attention.
Indexer weights are random (seeded identically on every TP rank, so all ranks select alike);
the model's own weights are whatever the checkpoint holds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from studio_backend.dsa.indexer import LightningIndexer
from studio_backend.dsa.prefix import RequestPrefixInfo
from studio_backend.dsa.tracer import Tracer


class DsaEngineHook:
    def __init__(
        self,
        runner: Any,
        tracer: Tracer | None = None,
        *,
        index_topk: int = 64,
        n_heads: int = 8,
        head_dim: int = 32,
        rope_dim: int = 16,
        seed: int = 0,
    ) -> None:
        self.runner, self.tracer, self.index_topk = runner, tracer, index_topk
        self.request_ids: Sequence[int] | None = None  # slot -> request id
        self.prefix_infos: Sequence[RequestPrefixInfo] | None = None  # by slot
        hidden = runner.config.hidden_size
        self.indexers: list[LightningIndexer] = []
        self._x: dict[int, torch.Tensor] = {}
        self._keys: dict[tuple[int, int], torch.Tensor] = {}
        self._handles = []
        self._attns = []
        for i, layer in enumerate(runner.model.model.layers):
            torch.manual_seed(seed * 1000 + i)
            ix = LightningIndexer(hidden, n_heads, head_dim, rope_dim, index_topk, max_batch=1,
                                  max_len=1).eval()  # fmt: skip
            self.indexers.append(ix)
            self._handles.append(
                layer.self_attn.register_forward_pre_hook(self._stash(i), with_kwargs=True)
            )
            layer.self_attn.attn.token_selector = self._selector(i)
            self._attns.append(layer.self_attn.attn)
        self._before, self._after = runner.before_step, runner.after_step
        runner.before_step, runner.after_step = self._before_step, self._after_step
        self._t0 = 0.0

    def _stash(self, layer: int):
        def hook(_mod, args, kwargs):
            self._x[layer] = kwargs.get("hidden_states", args[1] if len(args) > 1 else None)

        return hook

    def _selector(self, layer: int):
        @torch.no_grad()
        def select(seq: Any, sl: slice, total: int) -> torch.Tensor:
            x = self._x[layer][sl]
            key = (layer, seq.slot)
            score, keys = self.indexers[layer].score_seq(x, seq.start_pos, self._keys.get(key))
            self._keys[key] = keys
            k = min(self.index_topk, total)
            vals, idx = score.topk(k, dim=-1)
            if seq.num_tokens == 1 and self.tracer is not None:
                slot = seq.slot
                rid = self.request_ids[slot] if self.request_ids is not None else slot
                info = self.prefix_infos[slot] if self.prefix_infos is not None else None
                self.tracer.set_batch([rid], [info] if info else None)
                self.tracer.record_dsa_topk(layer_id=layer, start_pos=seq.start_pos,
                                            end_pos=total, topk_indices=idx[None],
                                            topk_scores=vals[None])  # fmt: skip
            return torch.zeros(score.shape, dtype=torch.bool).scatter(1, idx, True)

        return select

    def _before_step(self, step: int) -> None:
        if self._before:
            self._before(step)
        if self.tracer is not None:
            self.tracer.set_step_timing(step, None)
        self._t0 = time.perf_counter()

    def _after_step(self, step: int) -> None:
        if self.tracer is not None:
            self.tracer.set_step_timing(step, int((time.perf_counter() - self._t0) * 1e6))
        if self._after:
            self._after(step)

    def reset(self) -> None:
        """Forget cached indexer keys (between batches; the engine frees its KV too)."""
        self._keys.clear()

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        for a in self._attns:
            a.token_selector = None
        self.runner.before_step, self.runner.after_step = self._before, self._after


def attach_dsa(runner: Any, tracer: Tracer | None = None, **kw: Any) -> DsaEngineHook:
    return DsaEngineHook(runner, tracer, **kw)
