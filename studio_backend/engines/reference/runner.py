"""The per-rank model runner: load, warm up, then prefill + batched decode (vLLM-style).

Every rank runs the same steps on the same token ids; logits are all-gathered so every rank
picks the same next token without another broadcast. A step is one top-level model forward
(msit counts steps the same way): step 0 is the prefill of all requests, flattened to
``[num_tokens, hidden]``; each later step decodes one token for every unfinished request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio_backend.engines.reference.layers import ForwardContext, SeqSlice, set_forward_context
from studio_backend.engines.reference.loader import load_weights
from studio_backend.engines.reference.model import Qwen3MoeForCausalLM
from studio_backend.models.config import Qwen3MoeConfig, read_config

StepHook = Callable[[int], None]


@dataclass
class Generation:
    """Output of one batch: per-step last-token logits of the active requests, in order."""

    step_logits: list[torch.Tensor] = field(default_factory=list)
    step_requests: list[list[int]] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)


class ModelRunner:
    def __init__(
        self,
        model_dir: str | Path,
        dtype: str | None = None,
        kronecker_observe: bool = False,
        layout: str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.config: Qwen3MoeConfig = read_config(self.model_dir)
        self.dtype = getattr(torch, dtype or self.config.dtype)
        self.model = Qwen3MoeForCausalLM(
            self.config, kronecker_observe=kronecker_observe, layout=layout
        )  # layout None: $STUDIO_REFERENCE_LAYOUT or 'vllm' (model.py)
        load_weights(self.model, self.model_dir, self.dtype)
        self.model.eval()
        self.before_step: StepHook | None = None
        self.after_step: StepHook | None = None
        self.steps_run = 0

    def warm_up(self) -> None:
        """One short prefill + decode, as vLLM's compile_or_warm_up_model does; dump hooks are
        installed after this so warm-up never lands in a dump (seed 000)."""
        self.generate([[0, 1, 2]], max_tokens=2, ignore_eos=True)
        self.steps_run = 0

    def _step(self, ids: list[int], seqs: list[SeqSlice]) -> torch.Tensor:
        positions = torch.cat([torch.arange(s.start_pos, s.start_pos + s.num_tokens) for s in seqs])
        input_ids = torch.tensor(ids, dtype=torch.long)
        if self.before_step:
            self.before_step(self.steps_run)
        with torch.inference_mode(), set_forward_context(ForwardContext(seqs)):
            hidden = self.model(input_ids=input_ids, positions=positions)
            last = torch.tensor([0] + [s.num_tokens for s in seqs]).cumsum(0)[1:] - 1
            logits = self.model.compute_logits(hidden[last])
        if self.after_step:
            self.after_step(self.steps_run)
        self.steps_run += 1
        return logits.float()

    def generate(
        self,
        prompts: list[list[int]],
        max_tokens: int | list[int],
        temperature: float = 0.0,
        seed: int = 0,
        ignore_eos: bool = False,
        on_token: Callable[[int, int], None] | None = None,
    ) -> Generation:
        """Greedy (temperature 0) or seeded sampling; ``on_token(request, token)`` streams."""
        n = len(prompts)
        limits = [max_tokens] * n if isinstance(max_tokens, int) else list(max_tokens)
        gen = Generation(tokens=[[] for _ in range(n)], finish_reasons=["length"] * n)
        g = torch.Generator().manual_seed(seed)
        eos = self.config.eos_token_id
        attn = self.model.attention_layers()
        active = [i for i in range(n) if limits[i] > 0]
        seqs = [SeqSlice(i, 0, len(prompts[i])) for i in active]
        ids = [t for i in active for t in prompts[i]]
        try:
            while active:
                logits = self._step(ids, seqs)
                gen.step_logits.append(logits)
                gen.step_requests.append(list(active))
                if temperature > 0:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    nxt = torch.multinomial(probs, 1, generator=g).squeeze(-1).tolist()
                else:
                    nxt = logits.argmax(dim=-1).tolist()
                still, seqs_next, ids = [], [], []
                for row, req in enumerate(active):
                    tok = int(nxt[row])
                    gen.tokens[req].append(tok)
                    if on_token:
                        on_token(req, tok)
                    done_eos = not ignore_eos and eos is not None and tok == eos
                    if done_eos:
                        gen.finish_reasons[req] = "stop"
                    if done_eos or len(gen.tokens[req]) >= limits[req]:
                        continue
                    still.append(req)
                    pos = len(prompts[req]) + len(gen.tokens[req]) - 1
                    seqs_next.append(SeqSlice(req, pos, 1))
                    ids.append(tok)
                active, seqs = still, seqs_next
        finally:
            for a in attn:
                a.free()
        return gen
