"""Tracer output against seed 004's schema and an independent Python/numpy recomputation."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from studio_backend.cli import main
from studio_backend.dsa.prefix import PrefixCacheAnalyzer, RequestPrefixInfo, sha1_tokens
from studio_backend.dsa.schema import validate_record, validate_summary
from studio_backend.dsa.summary import summarize_file
from studio_backend.dsa.synthetic import generate_trace
from studio_backend.dsa.tiers import LruTiers
from studio_backend.dsa.tracer import TraceConfig, Tracer


def _lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(x) for x in fh]


def test_record_fields_exact(tmp_path: Path) -> None:
    cfg = TraceConfig(out_dir=str(tmp_path), kv_block_size_tokens=4, kv_bytes_per_token=10)
    tr = Tracer(cfg)
    tr.set_run_meta("r1", "unit")
    tr.set_batch([7], [RequestPrefixInfo(True, 2, "k")])
    tr.set_step_timing(20, None)
    pos = [19, 0, 1, 2, 9, 17, 18, 5, 1]  # a duplicate and -1 padding below
    tr.record_dsa_topk(
        layer_id=3, start_pos=20, end_pos=21,
        topk_indices=np.array([[pos + [-1]]]), topk_scores=np.array([[[1.0] * 9 + [0.0]]]),
    )  # fmt: skip
    assert not (tmp_path / "trace_steps.jsonl").exists() or not _lines(
        tmp_path / "trace_steps.jsonl"
    )
    tr.set_step_timing(20, 555)
    tr.close()
    (rec,) = _lines(tmp_path / "trace_steps.jsonl")
    assert validate_record(rec) == []
    uniq = sorted(set(pos))  # [0,1,2,5,9,17,18,19]
    offsets = sorted(20 - p for p in uniq)  # [1,2,3,11,15,18,19,20]
    assert rec["unique_token_pos_count"] == 8
    assert (rec["offset_min"], rec["offset_p50"], rec["offset_max"]) == (1, offsets[4], 20)
    assert rec["selected_block_ids"] == [0, 1, 2, 4] and rec["unique_blocks"] == 4
    # tokens per block: b0 {0,1,2}=3, b1 {5}=1, b2 {9}=1, b4 {17,18,19}=3 -> sorted [1,1,3,3]
    assert rec["tokens_per_touched_block"] == {"mean": 2.0, "p50": 3, "p95": 3}
    assert rec["kv_fetch"]["hbm"] == {
        "hit_blocks": [0, 1, 2, 4], "bytes_read": 10 * 4 * 4, "read_ops": 1,
        "latency_us": 555, "batch_size": 4,
    }  # fmt: skip
    assert rec["kv_fetch"]["remote_pool"]["hit_blocks"] == []
    assert rec["prefix"] == {
        "prefix_cache_hit": True, "prefix_cached_blocks": 2, "prefix_key": "k",
        "intersection_ratio": 0.5, "intersection_blocks": [0, 1],
    }  # fmt: skip
    assert rec["selected_token_pos"] == pos
    assert rec["scores_stats"] == {"min": 1.0, "mean": 1.0, "max": 1.0}
    assert (rec["request_id"], rec["layer_id"], rec["step_idx"], rec["seq_len_current"]) == (
        7, 3, 20, 21,
    )  # fmt: skip


def test_schema_rejects_inconsistent_record(tmp_path: Path) -> None:
    generate_trace(tmp_path, requests=1, steps=1, layers=1)
    rec = _lines(tmp_path / "trace_steps.jsonl")[0]
    bad = copy.deepcopy(rec)
    bad["unique_blocks"] += 1
    assert "unique_blocks != len(selected_block_ids)" in validate_record(bad)
    bad = copy.deepcopy(rec)
    del bad["kv_fetch"]["local_pool"]
    assert any("kv_fetch" in e for e in validate_record(bad))
    bad = copy.deepcopy(rec)
    bad["selected_token_pos"].append(10**6)
    assert any("outside" in e for e in validate_record(bad))


def _numpy_summary(recs: list[dict]) -> dict:
    """Independent recomputation (numpy sort + seed 004's round((n-1)q) index)."""

    def dist(v):
        s = np.sort(np.asarray(v))
        n = len(s)
        return {
            "count": n, "min": int(s[0]), "p50": int(s[int(np.round((n - 1) * 0.5))]),
            "p95": int(s[int(np.round((n - 1) * 0.95))]), "max": int(s[-1]),
            "mean": float(s.sum() / n),
        }  # fmt: skip

    ub, tpb, off = [], [], []
    for r in recs:
        u = np.unique(r["selected_token_pos"])
        ub.append(len(r["selected_block_ids"]))
        tpb += np.unique(u // r["block_size_tokens"], return_counts=True)[1].tolist()
        off += ((r["seq_len_current"] - 1) - u).tolist()
    return {"unique_blocks": dist(ub), "tokens_per_touched_block": dist(tpb), "offsets": dist(off)}


@pytest.mark.parametrize("gz", [False, True])
def test_summary_equals_numpy_and_summarize(tmp_path: Path, gz: bool) -> None:
    summary = generate_trace(
        tmp_path, requests=3, steps=5, layers=3, topk=48, prompt_len=200, shared_prefix=64,
        kv_block_size=8, seed=3, gzip=gz,
    )  # fmt: skip
    path = tmp_path / ("trace_steps.jsonl" + (".gz" if gz else ""))
    recs = _lines(path)
    assert len(recs) == 45 and all(validate_record(r) == [] for r in recs)
    assert validate_summary(summary) == []
    oracle = _numpy_summary(recs)
    for k in oracle:
        assert summary[k] == pytest.approx(oracle[k]), k
    again = summarize_file(path)
    for k in ("unique_blocks", "tokens_per_touched_block", "offsets", "prefix_intersection_ratio"):
        assert again[k] == pytest.approx(summary[k]), k
    assert again["prefix_hot_blocks"] == summary["prefix_hot_blocks"]
    # hot blocks oracle: requests 1 and 2 hit the 8 shared blocks
    counts: dict[int, dict[int, int]] = {}
    for r in recs:
        for b in r["prefix"]["intersection_blocks"]:
            counts.setdefault(r["request_id"], {}).setdefault(b, 0)
            counts[r["request_id"]][b] += 1
    assert set(summary["prefix_hot_blocks"]) == {str(k) for k in counts} == {"1", "2"}
    for req, c in counts.items():
        want = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        got = [(d["block_id"], d["touch_count"]) for d in summary["prefix_hot_blocks"][str(req)]]
        assert got == want


def test_sample_rate_store_scores_and_block_size(tmp_path: Path) -> None:
    cfg = TraceConfig(out_dir=str(tmp_path), sample_rate=0.5, store_scores_topk=True, seed=1,
                      kv_block_size_tokens=32)  # fmt: skip
    tr = Tracer(cfg)
    sampled = []
    for step in range(40):
        tr.set_step_timing(step, None)
        sampled.append(tr.ctx.step_sampled)
        for layer in range(2):
            tr.record_dsa_topk(layer_id=layer, start_pos=100 + step, end_pos=101 + step,
                               topk_indices=[[list(range(0, 100, 3))]],
                               topk_scores=[[[0.5] * 34]])  # fmt: skip
        tr.set_step_timing(step, 10)
    tr.close()
    recs = _lines(tmp_path / "trace_steps.jsonl")
    assert 5 < sum(sampled) < 35
    # whole steps are sampled: every sampled step has both layers
    assert len(recs) == 2 * sum(sampled)
    assert {r["step_idx"] for r in recs} == {100 + s for s, keep in enumerate(sampled) if keep}
    assert all(r["scores_topk"] == [0.5] * 34 and "scores_stats" not in r for r in recs)
    assert all(
        r["block_size_tokens"] == 32 and r["selected_block_ids"] == [0, 1, 2, 3] for r in recs
    )


def test_prefix_analyzer_key_tokens() -> None:
    a = PrefixCacheAnalyzer(prefix_cache_key_tokens=64)
    base = list(range(100))
    first = a.analyze_prompt_tokens(base, 16)
    assert (first.prefix_cache_hit, first.prefix_cached_blocks) == (False, 0)
    assert first.prefix_key == sha1_tokens(base[:64])
    # same first 64 tokens -> hit on 64 tokens = 4 blocks
    second = a.analyze_prompt_tokens(base[:64] + [999] * 50, 16)
    assert (second.prefix_cache_hit, second.prefix_cached_blocks) == (True, 4)
    # only the first 32 shared -> longest matching candidate is 32 tokens = 2 blocks
    third = a.analyze_prompt_tokens(base[:40] + [5] * 80, 16)
    assert (third.prefix_cache_hit, third.prefix_cached_blocks) == (True, 2)


def test_lru_tiers_simulation() -> None:
    t = LruTiers(hbm_blocks=2, local_blocks=1)
    first = t.fetch(request_id=0, layer_id=0, block_ids=[1, 2, 3], block_size=16)
    assert first["remote_pool"]["hit_blocks"] == [1, 2, 3]
    # HBM holds {2,3}, the local pool {1}
    second = t.fetch(request_id=0, layer_id=0, block_ids=[1, 3], block_size=16)
    assert second["hbm"]["hit_blocks"] == [3] and second["local_pool"]["hit_blocks"] == [1]


def test_selfcheck_cli(tmp_path: Path, capsys) -> None:
    assert main(["dsa", "selfcheck", "--out", str(tmp_path / "sc"), "--layers", "3"]) == 0
    assert "18 records and summary.json valid" in capsys.readouterr().out
    assert len(_lines(tmp_path / "sc" / "trace_steps.jsonl")) == 2 * 3 * 3
    assert main(["dsa", "summarize", str(tmp_path / "nope.jsonl"), "--out", "x"]) == 2
