"""Lightning indexer vs a loop oracle, DSA attention vs dense attention, workloads, the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from studio_backend.dsa.indexer import (
    LightningIndexer,
    SparseAttention,
    TinyConfig,
    apply_rope,
    rope_cos_sin,
)
from studio_backend.dsa.run import run_requests
from studio_backend.dsa.schema import validate_record
from studio_backend.dsa.summary import summarize_file
from studio_backend.dsa.tracer import TraceConfig
from studio_backend.dsa.workloads import Request
from studio_backend.dsa.workloads.burstgpt import load_burstgpt, replay
from studio_backend.dsa.workloads.needle import needle_prompts
from studio_backend.dsa.workloads.samples import (
    burstgpt_sample,
    longbench_v2_sample,
    mooncake_sample,
    ruler_sample,
    sharegpt_sample,
)
from studio_backend.dsa.workloads.sharegpt import load_sharegpt

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "dsa"


def _loop_scores(ix: LightningIndexer, x: torch.Tensor) -> torch.Tensor:
    """I[t,s] = sum_h w[t,h] * relu(q[t,h] . k[s]) written out with loops (no einsum)."""
    b, s, _ = x.shape
    H, D, R = ix.n_heads, ix.head_dim, ix.rope_dim
    cos, sin = rope_cos_sin(torch.arange(s), R)
    q = ix.wq_b(x).view(b, s, H, D)
    q = torch.cat([apply_rope(q[..., :R], cos, sin), q[..., R:]], -1)
    k = ix.k_norm(ix.wk(x))
    k = torch.cat([apply_rope(k[..., :R], cos, sin), k[..., R:]], -1)
    w = ix.weights_proj(x) * H**-0.5 * D**-0.5
    out = torch.full((b, s, s), float("-inf"))
    for bi in range(b):
        for t in range(s):
            for j in range(t + 1):
                out[bi, t, j] = sum(
                    w[bi, t, h] * torch.relu(q[bi, t, h] @ k[bi, j]) for h in range(H)
                )
    return out


def test_indexer_matches_loop_and_decode_matches_prefill() -> None:
    torch.manual_seed(0)
    ix = LightningIndexer(dim=16, n_heads=3, head_dim=8, rope_dim=4, index_topk=5, max_len=32)
    x = torch.randn(2, 9, 16)
    with torch.no_grad():
        full = ix.scores(x, 0)
        assert torch.allclose(full, _loop_scores(ix, x), atol=1e-5)
        idx, _ = ix(x, 0)
        assert idx.shape == (2, 9, 5)
        # causal: once a query has >= topk earlier tokens it never selects a later one; before
        # that its top-k holds all its earlier tokens plus masked (-inf) fillers (as upstream)
        assert (idx[:, 4:] <= torch.arange(4, 9)[None, :, None]).all()
        for t in range(4):
            assert all(set(range(t + 1)) <= set(idx[b, t].tolist()) for b in range(2))
        # decode with the cache == the last row of a full prefill
        ix.scores(x[:, :8], 0)
        step = ix.scores(x[:, 8:], 8)
        assert torch.allclose(step[:, 0], full[:, 8], atol=1e-5)
        # early positions select min(topk, end_pos) tokens
        idx2, _ = ix(x[:, :3], 0)
        assert idx2.shape[-1] == 3


def test_sparse_attention_with_full_topk_is_dense_attention() -> None:
    cfg = TinyConfig(dim=32, heads=4, index_topk=1000, max_batch=1, max_len=64)
    torch.manual_seed(1)
    attn = SparseAttention(cfg, 0)
    x = torch.randn(1, 12, 32)
    with torch.no_grad():
        got = attn(x, 0)
        q, k, v = attn.qkv(x).view(1, 12, 3, 4, 8).unbind(2)
        cos, sin = rope_cos_sin(torch.arange(12), 8)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        ref = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        want = attn.o(ref.transpose(1, 2).reshape(1, 12, 32))
    assert torch.allclose(got, want, atol=1e-5)


def test_sharegpt_modes_and_shared_prefix(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps(sharegpt_sample()))
    full = load_sharegpt(p, "full")
    turns = load_sharegpt(p, "per_user_turn")
    n_user = sum(1 for c in sharegpt_sample() for t in c["conversations"] if t["from"] == "human")
    assert len(full) == 6 and len(turns) == n_user
    assert all(r.prompt.startswith("SYSTEM: ") for r in turns)
    # turns of one conversation grow: each prompt extends the previous one's history
    first = [r for r in turns if r.conversation == "synthetic-0-0"]
    assert first[1].prompt.startswith(first[0].prompt.removesuffix("ASSISTANT:"))
    assert "ASSISTANT: About" in full[0].prompt and full[0].prompt.endswith("ASSISTANT:")


def test_burstgpt_replay_latencies(tmp_path: Path) -> None:
    p = tmp_path / "b.csv"
    p.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "10,ChatGPT,5,2,7,x\n10.5,ChatGPT,3,1,4,x\n11,GPT-4,4,1,5,x\nbad,row,,,,\n")  # fmt: skip
    reqs = load_burstgpt(p)
    assert [r.arrival_s for r in reqs] == [0.0, 0.5, 1.0]
    # FIFO, batch 2, 1 s service: r0 runs alone [0,1]; r1 (0.5) and r2 (1.0) run [1,2]
    lat = replay(reqs, 2, lambda batch: 1.0)
    assert lat == [1000.0, 1500.0, 1000.0]


def test_run_sharegpt_trace_is_valid_and_summarizes(tmp_path: Path) -> None:
    reqs = load_sharegpt(ASSETS / "sharegpt_sample.json", "per_user_turn", limit=4)
    out = tmp_path / "run"
    cfg = TraceConfig(out_dir=str(out), kv_block_size_tokens=16)
    summary = run_requests(reqs, out, dataset="sharegpt", trace_cfg=cfg, max_new_tokens=3,
                           model_cfg=TinyConfig(layers=2, index_topk=32))  # fmt: skip
    recs = [json.loads(x) for x in (out / "trace_steps.jsonl").read_text().splitlines()]
    assert len(recs) == 4 * 3 * 2
    assert all(validate_record(r) == [] for r in recs)
    assert all(r["unique_token_pos_count"] == 32 for r in recs)
    assert {r["request_id"] for r in recs} == {0, 1, 2, 3}
    # requests after the first share the system prompt: prefix-cache hits
    assert all(r["prefix"]["prefix_cache_hit"] for r in recs if r["request_id"] > 0)
    again = summarize_file(out / "trace_steps.jsonl")
    for k in ("unique_blocks", "tokens_per_touched_block", "offsets", "prefix_hot_blocks"):
        assert again[k] == pytest.approx(summary[k])


def test_needle_and_shipped_samples() -> None:
    reqs = needle_prompts(3, 500, seed=2)
    assert len(reqs) == 3 and all("special magic number is" in r.prompt for r in reqs)
    assert json.loads((ASSETS / "sharegpt_sample.json").read_text()) == sharegpt_sample()
    assert (ASSETS / "burstgpt_sample.csv").read_text() == burstgpt_sample()
    assert (ASSETS / "mooncake_sample.jsonl").read_text() == mooncake_sample()
    assert (ASSETS / "ruler_sample.jsonl").read_text() == ruler_sample()
    assert json.loads((ASSETS / "longbench_v2_sample.json").read_text()) == longbench_v2_sample()
    assert isinstance(Request(0, "x"), Request)
