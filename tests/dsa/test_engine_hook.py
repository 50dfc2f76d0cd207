"""DSA on the reference engine: off by default, dense when top-k covers the context, traced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from studio_backend.dsa.engine_hook import attach_dsa
from studio_backend.dsa.prefix import PrefixCacheAnalyzer
from studio_backend.dsa.schema import validate_record
from studio_backend.dsa.tracer import TraceConfig, Tracer
from studio_backend.engines.reference.runner import ModelRunner
from studio_backend.models.create import create_model


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> ModelRunner:
    d = create_model(tmp_path_factory.mktemp("m") / "tiny", preset="tiny", seed=0)
    return ModelRunner(d)


PROMPTS = [list(range(10, 50)), list(range(10, 42)) + [7] * 15]  # share 32 tokens


def test_hook_is_off_by_default_and_full_topk_is_dense(runner: ModelRunner) -> None:
    assert all(a.token_selector is None for a in runner.model.attention_layers())
    dense = runner.generate(PROMPTS, 4, ignore_eos=True)
    hook = attach_dsa(runner, None, index_topk=4096)
    try:
        full = runner.generate(PROMPTS, 4, ignore_eos=True)
    finally:
        hook.detach()
    assert full.tokens == dense.tokens
    for a, b in zip(full.step_logits, dense.step_logits, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert all(a.token_selector is None for a in runner.model.attention_layers())


def test_sparse_engine_trace(runner: ModelRunner, tmp_path: Path) -> None:
    dense = runner.generate(PROMPTS, 5, ignore_eos=True)
    tracer = Tracer(TraceConfig(out_dir=str(tmp_path), kv_block_size_tokens=8))
    tracer.set_run_meta("engine", "unit")
    hook = attach_dsa(runner, tracer, index_topk=16)
    an = PrefixCacheAnalyzer(32)
    hook.request_ids = [100, 101]
    hook.prefix_infos = [an.analyze_prompt_tokens(p, 8) for p in PROMPTS]
    try:
        sparse = runner.generate(PROMPTS, 5, ignore_eos=True)
    finally:
        hook.detach()
    summary = tracer.close()
    recs = [json.loads(x) for x in (tmp_path / "trace_steps.jsonl").read_text().splitlines()]
    layers = runner.config.num_hidden_layers
    assert len(recs) == 2 * 4 * layers  # 4 decode steps after the prefill, 2 requests
    assert all(validate_record(r) == [] for r in recs)
    assert {r["request_id"] for r in recs} == {100, 101}
    assert all(r["unique_token_pos_count"] == 16 for r in recs)
    assert all(r["kv_fetch"]["hbm"]["latency_us"] > 0 for r in recs)
    # the second prompt shares the first 32 tokens (the key length): a hit on 32 / 8 = 4 blocks
    r1 = [r for r in recs if r["request_id"] == 101]
    assert all(
        r["prefix"]["prefix_cache_hit"] and r["prefix"]["prefix_cached_blocks"] == 4 for r in r1
    )
    assert all(
        r["prefix"]["intersection_blocks"] == [b for b in r["selected_block_ids"] if b < 4]
        for r in r1
    )
    r0 = [r for r in recs if r["request_id"] == 100][0]
    assert r0["seq_len_current"] == len(PROMPTS[0]) + 1 and r0["step_idx"] == len(PROMPTS[0])
    assert summary is not None and summary["unique_blocks"]["count"] == len(recs)
    # attention really is restricted: the logits move away from dense attention
    assert not torch.allclose(sparse.step_logits[-1], dense.step_logits[-1], atol=1e-4)
