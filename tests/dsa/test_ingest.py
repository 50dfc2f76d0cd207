"""Ingest (streamed, .jsonl and .gz, bad lines) and every analysis against Python/numpy oracles."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from studio_backend.dsa import analysis, replay
from studio_backend.dsa.ingest import Ingestor, ingest_path
from studio_backend.dsa.synthetic import generate_trace
from studio_backend.dsa.tracer import TraceConfig, Tracer, distribution


def _recs(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        return [json.loads(x) for x in fh if x.strip()]


@pytest.fixture
def trace(tmp_path: Path) -> tuple[Path, dict]:
    summary = generate_trace(
        tmp_path / "t", requests=3, steps=6, layers=5, topk=40, prompt_len=160,
        shared_prefix=48, kv_block_size=8, seed=5,
    )  # fmt: skip
    return tmp_path / "t" / "trace_steps.jsonl", summary


def test_ingest_matches_records_and_summary(workspace, trace) -> None:
    path, summary = trace
    res = ingest_path(workspace, path)
    recs = _recs(path)
    assert (res.kind, res.rows, res.bad_lines) == ("steps", len(recs), 0)
    assert analysis.trace_summary_json(workspace, res.trace_id) == summary  # summary.json attached
    tid = res.trace_id
    # seed-004 aggregates recomputed from the database equal the tracer's own summary
    assert analysis.prefix_hot_blocks(workspace, tid) == summary["prefix_hot_blocks"]
    dists = analysis.record_distributions(workspace, tid)
    assert dists["unique_blocks"] == summary["unique_blocks"]
    assert dists["intersection_ratio"] == pytest.approx(summary["prefix_intersection_ratio"])
    assert dists["offset_max"] == distribution([r["offset_max"] for r in recs])
    # byte offsets point at each record's line (raw positions stay in the file)
    row = (
        workspace.cursor()
        .execute(
            "SELECT byte_offset, line_no FROM dsa_steps WHERE trace_id = ? ORDER BY line_no LIMIT 1 OFFSET 7",
            [tid],
        )
        .fetchone()
    )
    with open(path, "rb") as fh:
        fh.seek(row[0])
        assert json.loads(fh.readline()) == recs[row[1] - 1] == recs[7]
    # re-ingesting the same file adds nothing
    assert ingest_path(workspace, path).rows == len(recs)


def test_heatmap_jaccard_tiers_latency(workspace, trace) -> None:
    path, _ = trace
    tid = ingest_path(workspace, path).trace_id
    recs = _recs(path)
    req, lo, hi = 1, 1, 3
    want: dict[tuple[int, int], int] = {}
    for r in recs:
        if r["request_id"] == req and lo <= r["layer_id"] <= hi:
            for b in r["selected_block_ids"]:
                want[(r["step_idx"], b)] = want.get((r["step_idx"], b), 0) + 1
    hm = analysis.heatmap(workspace, tid, req, lo, hi)
    assert dict(zip(zip(hm.step_idx, hm.block_id, strict=True), hm.layers, strict=True)) == want

    by = {
        (r["step_idx"], r["layer_id"]): set(r["selected_block_ids"])
        for r in recs
        if r["request_id"] == req
    }
    steps = sorted({s for s, _ in by})
    jac = lambda a, b: len(a & b) / len(a | b)  # noqa: E731
    j = analysis.jaccard(workspace, tid, req)
    want_steps = sorted(
        (s2, layer, jac(by[(s2, layer)], by[(s1, layer)]))
        for s1, s2 in zip(steps, steps[1:], strict=False) for layer in range(5)
    )  # fmt: skip
    got = sorted(zip(j["steps"].step_idx, j["steps"].layer_id, j["steps"].jaccard, strict=True))
    assert [g[:2] for g in got] == [w[:2] for w in want_steps]
    assert np.allclose([g[2] for g in got], [w[2] for w in want_steps])
    want_layers = sorted(
        (s, layer, jac(by[(s, layer)], by[(s, layer - 1)])) for s in steps for layer in range(1, 5)
    )
    got = sorted(zip(j["layers"].step_idx, j["layers"].layer_id, j["layers"].jaccard, strict=True))
    assert np.allclose([g[2] for g in got], [w[2] for w in want_layers]) and len(got) == len(
        want_layers
    )

    tiers = analysis.tier_breakdown(workspace, tid).set_index("tier")
    assert tiers.loc["hbm", "blocks"] == sum(r["kv_fetch"]["hbm"]["batch_size"] for r in recs)
    assert tiers.loc["remote_pool", "blocks"] == 0
    lat = analysis.step_latency(workspace, tid)
    per_step = sorted(
        {
            (r["request_id"], r["step_idx"]): r["kv_fetch"]["hbm"]["latency_us"] for r in recs
        }.values()
    )
    assert lat["p50"] == per_step[int(round((len(per_step) - 1) * 0.5))]
    assert lat["max"] == max(per_step) and lat["steps"] == len(per_step)


def _lru_oracle(sets: list[set[int]], caps: list[int]) -> list[float]:
    depths = []
    for t, s in enumerate(sets):
        for b in s:
            prev = [u for u in range(t) if b in sets[u]]
            depths.append(len(set().union(*sets[prev[-1] : t])) if prev else 0)
    return [sum(1 for d in depths if 0 < d <= c) / len(depths) for c in caps]


def test_lru_and_recency_against_brute_force(workspace, trace) -> None:
    rng = np.random.default_rng(0)
    sets = [
        set(rng.choice(30, size=rng.integers(1, 12), replace=False).tolist()) for _ in range(40)
    ]
    caps = [1, 2, 5, 10, 20, 30]
    got = replay.hit_ratio_curve(replay.lru_depths([np.array(sorted(s)) for s in sets]), caps)
    assert np.allclose(got, _lru_oracle(sets, caps))
    # recency: steps since last touch, brute force
    ids = list(range(100, 140))
    want = []
    for t, s in enumerate(sets):
        for b in s:
            prev = [u for u in range(t) if b in sets[u]]
            if prev:
                want.append(t - prev[-1])
    assert sorted(replay.recency(ids, [np.array(sorted(s)) for s in sets]).tolist()) == sorted(want)

    path, _ = trace
    tid = ingest_path(workspace, path).trace_id
    recs = _recs(path)
    per_step: dict[int, set[int]] = {}
    for r in recs:
        if r["request_id"] == 2:
            per_step.setdefault(r["step_idx"], set()).update(r["selected_block_ids"])
    s2 = [per_step[k] for k in sorted(per_step)]
    curve = analysis.lru_curve(workspace, tid, caps, 0, 4, request_ids=[2])
    assert np.allclose(curve.hit_ratio, _lru_oracle(s2, caps))


def test_streaming_growth_plain_and_gzip(workspace, tmp_path: Path) -> None:
    for gz in (False, True):
        out = tmp_path / f"live{int(gz)}"
        tr = Tracer(TraceConfig(out_dir=str(out), gzip=gz, kv_block_size_tokens=4))
        name = "trace_steps.jsonl" + (".gz" if gz else "")
        ing = None
        seen = 0
        for step in range(6):
            tr.set_step_timing(step, None)
            for layer in range(3):
                tr.record_dsa_topk(layer_id=layer, start_pos=50 + step, end_pos=51 + step,
                                   topk_indices=[[[0, 5, 9, 30 + step, 49]]])  # fmt: skip
            tr.set_step_timing(step, 100)
            if ing is None:
                ing = Ingestor(workspace, out / name)
            seen += ing.poll()
            assert seen == 3 * (step + 1), (gz, step)  # every flushed step is visible at once
        tr.close()
        assert ing.poll() == 0
        tid = ing.trace_id
        n, distinct = (
            workspace.cursor()
            .execute(
                "SELECT count(*), count(DISTINCT line_no) FROM dsa_steps WHERE trace_id = ?", [tid]
            )
            .fetchone()
        )
        assert n == distinct == 18
        # a new process resumes from the stored offset without duplicating rows
        assert Ingestor(workspace, out / name).poll() == 0


def test_bad_lines_counted_with_line_numbers(workspace, trace, tmp_path: Path) -> None:
    path, _ = trace
    lines = path.read_text().splitlines()
    broken = list(lines)
    broken.insert(3, "{not json")
    rec = json.loads(lines[5])
    rec["unique_blocks"] = "many"
    broken[10] = json.dumps(rec)
    broken.insert(20, "")
    bad = tmp_path / "bad" / "trace_steps.jsonl"
    bad.parent.mkdir()
    bad.write_text("\n".join(broken) + "\n" + lines[0][:40])  # plus a partial last line
    res = ingest_path(workspace, bad)
    assert res.rows == len(lines) - 1  # one good line was replaced by the type error
    # The partial last line (no newline) is read at the end of the ingest: a bad line, not lost.
    assert res.bad_lines == 3 and res.first_bad_line == 4
    df = analysis.bad_lines(workspace, res.trace_id)
    assert df.line_no.tolist() == [4, 11, len(broken) + 1]
    assert "JSON" in df.error[0] and "unique_blocks" in df.error[1] and "JSON" in df.error[2]


def test_mooncake_prefix_trace(workspace, tmp_path: Path) -> None:
    rows = [
        {"timestamp": 0, "input_length": 40, "output_length": 5, "hash_ids": [1, 2, 3]},
        {"timestamp": 10, "input_length": 30, "output_length": 5, "hash_ids": [1, 2, 4]},
        {"timestamp": 20, "input_length": 50, "output_length": 5, "hash_ids": [1, 5, 6, 7]},
        {"timestamp": 30, "input_length": 30, "output_length": 5, "hash_ids": [1, 2, 3],
         "chat_id": 9, "parent_chat_id": -1, "turn": 1, "type": "text"},
    ]  # fmt: skip
    p = tmp_path / "mooncake.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    res = ingest_path(workspace, p)
    assert (res.kind, res.rows, res.bad_lines, res.first_bad_line) == ("prefix", 4, 1, 5)
    ov = analysis.prefix_trace_overview(workspace, res.trace_id)
    assert (ov["requests"], ov["block_accesses"], ov["unique_blocks"]) == (4, 13, 7)
    caps = [1, 2, 3, 7]
    got = analysis.prefix_trace_lru(workspace, res.trace_id, caps).hit_ratio.tolist()
    assert np.allclose(got, _lru_oracle([set(r["hash_ids"]) for r in rows], caps))
    pop = analysis.prefix_trace_popularity(workspace, res.trace_id)
    assert pop.touches.tolist()[:2] == [4, 3] and pop.touch_share.iloc[-1] == 1.0


def test_strip_arrays_only_cuts_flat_number_arrays() -> None:
    from studio_backend.dsa.ingest import strip_arrays

    line = (b'{"selected_token_pos": [3, 1, 2], "kv_fetch": {"hbm": {"hit_blocks": [0, 1]},'
            b' "local_pool": {"hit_blocks": null, "y": [5]}}, "scores_topk": [[1]]}\n')  # fmt: skip
    out = strip_arrays(line)
    assert json.loads(out) == {
        "selected_token_pos": [], "kv_fetch": {"hbm": {"hit_blocks": []},
        "local_pool": {"hit_blocks": None, "y": [5]}}, "scores_topk": [[1]],
    }  # fmt: skip


@pytest.mark.parametrize("exact", [False, True])
def test_trace_with_only_seed_004_key_fields(workspace, trace, tmp_path, monkeypatch, exact):
    """Issue 16: a trace carrying seed 004's key fields but not run_name, dataset, rank,
    world_size (nor selected_token_pos on some lines) is valid on both paths; the result says
    which optional fields its rows lack, and how many rows."""
    from studio_backend.dsa import fastpath

    src, _ = trace
    recs = _recs(src)
    drop = ("run_name", "dataset", "rank", "world_size")
    lines = []
    for i, r in enumerate(recs):
        r = {k: v for k, v in r.items() if k not in drop}
        if i % 4 == 0:
            del r["selected_token_pos"]
        lines.append(json.dumps(r))
    path = tmp_path / "keys_only" / "trace_steps.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    if exact:
        monkeypatch.setattr(fastpath, "prepare_chunk", lambda *a: None)
    ing = Ingestor(workspace, path)
    ing.poll()
    res = ing.result()
    n = len(recs)
    assert n == 90 and ing.chunks["fast" if not exact else "exact"] == 1
    assert (res.rows, res.bad_lines) == (n, 0)
    want = {"run_name": n, "dataset": n, "rank": n, "world_size": n,
            "selected_token_pos": len(range(0, n, 4))}  # fmt: skip
    assert res.missing_optional == want
    from studio_backend.dsa.summary import summarize_file

    assert summarize_file(path)["optional_fields_missing"] == want  # studio dsa summarize
    assert res.describe().endswith(
        "optional fields absent: run_name (90 of 90 rows), dataset (90 of 90 rows), rank (90 of"
        " 90 rows), world_size (90 of 90 rows), selected_token_pos (23 of 90 rows)"
    )
    got = workspace.cursor().execute(
        "SELECT request_id, layer_id, step_idx, unique_blocks, rank FROM dsa_steps"
        " WHERE trace_id = ? ORDER BY line_no", [res.trace_id]
    ).fetchall()  # fmt: skip
    assert got == [
        (r["request_id"], r["layer_id"], r["step_idx"], r["unique_blocks"], None) for r in recs
    ]
