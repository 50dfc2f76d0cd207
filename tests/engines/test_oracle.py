"""The reference engine against transformers (tp=1) and against itself (tp=2, tp=4)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studio_backend.engines.reference.offline import OfflineResult, run_offline

PROMPTS = [[11, 57, 203, 9, 100, 42, 7], [3, 480, 4]]  # two requests, batched and flattened
STEPS = 4  # prefill + 3 decode steps
TOL = 1e-4


@pytest.fixture(scope="module")
def tp1(tiny_model: Path) -> OfflineResult:
    return run_offline(tiny_model, tp=1, prompts=PROMPTS, max_tokens=STEPS)


def hf_logits(model_dir: Path, ids: list[int]) -> torch.Tensor:
    from transformers import Qwen3MoeForCausalLM

    model = Qwen3MoeForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def test_tp1_matches_transformers(tiny_model: Path, tp1: OfflineResult) -> None:
    assert len(tp1.step_logits) == STEPS
    for req, prompt in enumerate(PROMPTS):
        # Teacher-forced over prompt + generated tokens: row p-1+s is step s's last-token logits.
        ref = hf_logits(tiny_model, prompt + tp1.tokens[req])
        for step, logits in enumerate(tp1.step_logits):
            row = tp1.step_requests[step].index(req)
            expected = ref[len(prompt) - 1 + step]
            diff = (logits[row] - expected).abs().max().item()
            assert diff < TOL, f"request {req} step {step}: max abs diff {diff}"
            assert tp1.tokens[req][step] == int(expected.argmax())


def test_tp1_logits_are_informative(tp1: OfflineResult) -> None:
    # Guards the oracle against a degenerate model (all-equal logits would match trivially).
    assert tp1.step_logits[0].std(dim=-1).min() > 0.1
    assert tp1.tokens[0] != tp1.tokens[1]


@pytest.mark.parametrize("tp", [2, 4])  # tp=4 > num_kv_heads=2: KV heads are replicated
def test_tensor_parallel_matches_tp1(tiny_model: Path, tp1: OfflineResult, tp: int) -> None:
    res = run_offline(tiny_model, tp=tp, prompts=PROMPTS, max_tokens=STEPS)
    assert res.tokens == tp1.tokens
    assert res.step_requests == tp1.step_requests
    for a, b in zip(res.step_logits, tp1.step_logits, strict=True):
        assert (a - b).abs().max().item() < TOL
