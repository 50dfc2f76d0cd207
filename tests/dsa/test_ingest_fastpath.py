"""The ingest fast path (fastpath.py, worker pool) against a json.loads/numpy oracle and against
the exact path (DuckDB on the whole line + line-by-line fallback) it must agree with."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from studio_backend.dsa import fastpath
from studio_backend.dsa import ingest as ingest_mod
from studio_backend.dsa.ingest import Ingestor, missing_fields
from studio_backend.dsa.schema import missing_optional, validate_record
from studio_backend.dsa.synthetic import generate_trace

STEP_COLS = (
    "line_no, byte_offset, rank, request_id, layer_id, step_idx, seq_len, unique_tokens,"
    " offset_min, offset_p50, offset_max, block_size, unique_blocks, tpb_mean, tpb_p50, tpb_p95,"
    " hbm_blocks, hbm_bytes, hbm_ops, hbm_latency_us, local_blocks, local_bytes, local_ops,"
    " local_latency_us, remote_blocks, remote_bytes, remote_ops, remote_latency_us, prefix_hit,"
    " prefix_cached_blocks, prefix_key, intersection_ratio, intersection_count, scores_min,"
    " scores_mean, scores_max"
)


def _base_lines(tmp_path: Path, store_scores: bool = False) -> list[bytes]:
    out = tmp_path / ("src_s" if store_scores else "src")
    generate_trace(
        out, requests=3, steps=7, layers=6, topk=48, prompt_len=300, shared_prefix=64,
        kv_block_size=8, seed=11, store_scores=store_scores,
    )  # fmt: skip
    return (out / "trace_steps.jsonl").read_bytes().splitlines()


OURS = ("run_name", "dataset", "rank", "world_size", "selected_token_pos")  # not key fields


def _mixed_trace(tmp_path: Path) -> bytes:
    """Tracer lines (json.dumps spacing) and compact orjson lines, plus edge cases the oracle
    and the schema agree on: blank lines, broken JSON, a missing and a null required field,
    a null block list, a leading zero, keys in another order, brackets inside a string,
    optional fields missing/null, and a truncated last line."""
    lines = _base_lines(tmp_path)
    recs = [json.loads(x) for x in lines]
    out: list[bytes] = []
    for i, (raw, rec) in enumerate(zip(lines, recs, strict=True)):
        if i % 3 == 1:
            raw = orjson.dumps(rec)  # the compact writer (bench/dsa.py)
        if i == 5:
            out.append(b"")
        if i == 9:
            out.append(b"{not json")
        if i == 14:
            bad = dict(rec)
            del bad["request_id"]
            raw = json.dumps(bad).encode()
        if i == 20:
            raw = json.dumps({**rec, "unique_blocks": None}).encode()
        if i == 23:
            raw = json.dumps({**rec, "rank": "zero"}).encode()  # DuckDB refuses the type
        if i == 25:
            raw = orjson.dumps({**rec, "event": "other"})
        if i == 27:
            raw = json.dumps({**rec, "selected_block_ids": None}).encode()
        if i == 33 and rec["selected_block_ids"]:
            ids = ",".join(str(b) for b in rec["selected_block_ids"])
            raw = (
                json.dumps(rec)
                .encode()
                .replace(
                    b'"selected_block_ids": [' + ids.replace(",", ", ").encode(),
                    b'"selected_block_ids": [0' + ids.replace(",", ", ").encode(),
                )
            )
            assert raw.count(b'"selected_block_ids": [0') == 1
        if i == 40:  # another key order: the ids come after the arrays
            keys = [k for k in rec if k not in ("request_id", "layer_id", "step_idx")]
            re_ordered = {k: rec[k] for k in keys}
            re_ordered |= {"step_idx": rec["step_idx"], "request_id": rec["request_id"],
                           "layer_id": rec["layer_id"]}  # fmt: skip
            raw = json.dumps(re_ordered).encode()
        if i == 47:
            raw = json.dumps({**rec, "run_name": 'a[1], "hit_blocks": [2] ]'}).encode()
        if i in (44, 60):  # seed 004's key fields only: valid, optional fields reported missing
            raw = json.dumps({k: v for k, v in rec.items() if k not in OURS}).encode()
        if i == 49:
            raw = orjson.dumps({k: v for k, v in rec.items() if k != "prefix"})  # a key field
        if i == 55:
            raw = json.dumps({**rec, "prefix": {**rec["prefix"], "prefix_key": None}}).encode()
        if i == 62:  # optional fields of the wrong type: bad lines on both paths
            raw = json.dumps({**rec, "run_name": 5}).encode()
        if i == 64:
            raw = orjson.dumps({**rec, "rank": "3"})
        if i == 66:
            raw = json.dumps({**rec, "world_size": 2.0}).encode()
        if i == 58:
            raw = json.dumps({k: v for k, v in rec.items() if k != "offset_p50"}).encode()
        if i == 52:
            rec2 = dict(rec)
            rec2.pop("selected_token_pos", None)  # optional
            rec2["kv_fetch"] = {**rec["kv_fetch"], "hbm": {**rec["kv_fetch"]["hbm"],
                                                            "latency_us": None}}  # fmt: skip
            raw = orjson.dumps(rec2)
        out.append(raw)
    out.append(b"")
    out.append(b"   ")
    out.extend(x for x in _base_lines(tmp_path, store_scores=True)[:20])  # scores_topk lines
    return b"\n".join(out) + b"\n" + lines[0][:57]  # a partial last line


def _gap_oracle(data: bytes) -> dict[str, int]:
    """Optional field -> valid lines lacking it (schema.missing_optional on json.loads)."""
    out: dict[str, int] = {}
    for line in data.split(b"\n")[:-1]:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if not validate_record(r):
            for k in missing_optional(r):
                out[k] = out.get(k, 0) + 1
    return out


def _oracle(data: bytes) -> tuple[list[tuple], dict[tuple[int, int, int], int], list[int]]:
    """(dsa_steps rows, OR-ed layer masks per (request, step, block), bad line numbers)."""
    rows, heat, bad = [], {}, []
    pos = 0
    for no, line in enumerate(data.split(b"\n")[:-1], start=1):  # the partial line is not read
        off, pos = pos, pos + len(line) + 1
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except ValueError:
            bad.append(no)
            continue
        if validate_record(r):
            bad.append(no)
            continue
        kv, pre, tpb = r["kv_fetch"], r["prefix"], r["tokens_per_touched_block"]
        sc = r.get("scores_stats") or {}
        tiers = []
        for t in ("hbm", "local_pool", "remote_pool"):
            tiers += [kv[t][k] for k in ("batch_size", "bytes_read", "read_ops", "latency_us")]
        rows.append((
            no, off, r.get("rank"), r["request_id"], r["layer_id"], r["step_idx"],
            r["seq_len_current"], r["unique_token_pos_count"], r["offset_min"], r["offset_p50"],
            r["offset_max"], r["block_size_tokens"], r["unique_blocks"], tpb["mean"], tpb["p50"],
            tpb["p95"], *tiers, pre["prefix_cache_hit"], pre["prefix_cached_blocks"],
            pre["prefix_key"], pre["intersection_ratio"],
            math.floor(pre["intersection_ratio"] * r["unique_blocks"] + 0.5),
            sc.get("min"), sc.get("mean"), sc.get("max"),
        ))  # fmt: skip
        for b in r["selected_block_ids"]:
            key = (r["request_id"], r["step_idx"], b)
            heat[key] = heat.get(key, 0) | (1 << r["layer_id"])
    return rows, heat, bad


def _tables(ws, tid: str) -> tuple[list[tuple], list[tuple], list[tuple], tuple]:
    cur = ws.cursor()
    steps = cur.execute(
        f"SELECT {STEP_COLS} FROM dsa_steps WHERE trace_id = ? ORDER BY line_no",  # noqa: S608
        [tid],
    ).fetchall()
    heat = cur.execute(
        "SELECT request_id, step_idx, block_id, mask_lo, mask_hi FROM dsa_block_heat"
        " WHERE trace_id = ? ORDER BY ALL",
        [tid],
    ).fetchall()
    bad = cur.execute(
        "SELECT line_no, error FROM dsa_bad_lines WHERE trace_id = ? ORDER BY line_no", [tid]
    ).fetchall()
    meta = cur.execute(
        "SELECT rows, bad_lines, lines_read, bytes_read, run_name, dataset, block_size"
        " FROM dsa_traces WHERE trace_id = ?",
        [tid],
    ).fetchone()
    return steps, heat, bad, (*meta, missing_fields(ws, tid))


def _combined_heat(heat_rows: list[tuple]) -> dict[tuple[int, int, int], int]:
    out: dict[tuple[int, int, int], int] = {}
    for r, s, b, lo, hi in heat_rows:
        out[(r, s, b)] = out.get((r, s, b), 0) | int(lo) | (int(hi) << 64)
    return out


def _ingest(workspace, path: Path, max_bytes: int, chunks: dict | None = None) -> str:
    ing = Ingestor(workspace, path)
    ing.poll(max_bytes)
    if chunks is not None:
        chunks.update(ing.chunks)
    return ing.trace_id


@pytest.mark.parametrize("mode", ["single", "workers", "gzip"])
def test_fast_path_matches_json_oracle(workspace, tmp_path: Path, monkeypatch, mode) -> None:
    data = _mixed_trace(tmp_path)
    path = tmp_path / "t" / ("trace_steps.jsonl.gz" if mode == "gzip" else "trace_steps.jsonl")
    path.parent.mkdir()
    path.write_bytes(gzip.compress(data) if mode == "gzip" else data)
    monkeypatch.setenv("STUDIO_DSA_WORKERS", "2" if mode == "workers" else "0")
    calls = []
    real = fastpath.prepare_chunk
    monkeypatch.setattr(fastpath, "prepare_chunk", lambda *a: calls.append(1) or real(*a))
    chunks: dict = {}
    tid = _ingest(workspace, path, 6000, chunks)  # small chunks: fast, refused, careful ones
    if mode != "gzip":  # (the gzip reader decompresses 1 MB at a time: one chunk here)
        assert chunks["fast"] >= 5 and chunks["exact"] >= 5, chunks
    steps, heat, bad, meta = _tables(workspace, tid)
    want_rows, want_heat, want_bad = _oracle(data)
    assert len(steps) == len(want_rows)
    for got, want in zip(steps, want_rows, strict=True):
        assert got[:13] == want[:13] and got[14:] == pytest.approx(want[14:], nan_ok=True)
        assert got[13] == pytest.approx(want[13])
    assert _combined_heat(heat) == want_heat
    assert [b[0] for b in bad] == want_bad
    n_lines = data.count(b"\n")
    assert meta[:4] == (len(want_rows), len(want_bad), n_lines, data.rfind(b"\n") + 1)
    gaps = _gap_oracle(data)
    assert meta[-1] == gaps and gaps["run_name"] == 2 and gaps["selected_token_pos"] == 3
    # line number = i + 3 (a blank line and a broken one come before): 49, 55, 58 are bad
    assert {47, 52, 58, 61, 63, 65, 67, 69} & set(want_bad) == {52, 58, 61, 65, 67, 69}
    if mode == "single":
        assert calls and chunks["worker"] == 0  # the fast path ran here
    if mode == "workers":
        assert chunks["worker"] >= 10, chunks  # all but the first chunk


def _exact_path(monkeypatch) -> None:
    monkeypatch.setenv("STUDIO_DSA_WORKERS", "0")
    monkeypatch.setattr(fastpath, "prepare_chunk", lambda *a: None)


def test_fast_path_tables_equal_the_exact_path(
    workspace, workspace_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """Same rows, same heat rows (chunk splits included), same bad lines, same counters; also
    for lines the schema rejects but a clean chunk's DuckDB parse accepts (unsorted blocks, a
    duplicated record, a layer >= 128)."""
    data = _mixed_trace(tmp_path)
    lines = data.split(b"\n")
    recs = {}
    for k, x in enumerate(lines[:60]):
        try:
            recs[k] = json.loads(x)
        except ValueError:
            continue
    recs = {k: r for k, r in recs.items() if isinstance(r, dict) and "layer_id" in r}
    i, rec = next((i, r) for i, r in recs.items() if i > 42 and len(r["selected_block_ids"]) > 2)
    lines[i] = orjson.dumps({**rec, "selected_block_ids": rec["selected_block_ids"][::-1]})
    j = next(k for k in recs if k > i + 2)
    lines.insert(j, lines[j])  # the same (request, step, layer) twice
    lines[j + 4] = orjson.dumps({**recs[j + 3], "layer_id": 130})
    data = b"\n".join(lines)
    for name, exact in (("fast", False), ("exact", True)):
        d = tmp_path / name
        d.mkdir()
        (d / "trace_steps.jsonl").write_bytes(data)
    from studio_backend.workspace import open_workspace

    monkeypatch.setenv("STUDIO_DSA_WORKERS", "2")
    chunks: dict = {}
    got = _tables(
        workspace, _ingest(workspace, tmp_path / "fast" / "trace_steps.jsonl", 6000, chunks)
    )
    assert chunks["fast"] >= 5 and chunks["exact"] >= 5 and chunks["worker"] >= 10, chunks
    with monkeypatch.context() as m:
        _exact_path(m)
        ws2 = open_workspace(workspace_dir.parent / "ws_exact")
        try:
            want = _tables(ws2, _ingest(ws2, tmp_path / "exact" / "trace_steps.jsonl", 6000))
        finally:
            ws2.close()
    assert got[0] == want[0]
    assert got[1] == want[1]  # raw heat rows: the same chunks give the same splits
    assert got[2] == want[2] and got[3] == want[3]
    assert any(r[4] == 130 for r in got[0])  # the odd lines did go in


def test_prepare_chunk_cuts_and_refusals() -> None:
    line = (b'{"request_id": 3, "layer_id": 1, "step_idx": 9, "run_name": "x[1]",'
            b' "selected_block_ids": [0, 4, 12], "kv_fetch": {"hbm": {"hit_blocks": [0, 4]}},'
            b' "scores_topk": [[1]], "selected_token_pos": [1, 33, 99]}\n')  # fmt: skip
    prep = fastpath.prepare_chunk(line + line.replace(b'"layer_id": 1', b'"layer_id": 2'))
    assert prep is not None and prep.n_lines == 2 and prep.starts.tolist() == [0, len(line)]
    first = json.loads(prep.stripped.split(b"\n")[0])
    assert first == {
        "request_id": 3, "layer_id": 1, "step_idx": 9, "run_name": "x[1]",
        "selected_block_ids": [], "kv_fetch": {"hbm": {"hit_blocks": []}},
        "scores_topk": [[1]], "selected_token_pos": [],
    }  # fmt: skip
    assert (prep.request_id.tolist(), prep.layer_id.tolist()) == ([3, 3], [1, 2])
    assert prep.heat["block_id"].tolist() == [0, 4, 12]
    assert prep.heat["lo"].tolist() == [6, 6, 6] and prep.heat["hi"].tolist() == [0, 0, 0]
    for bad in (b"[01, 2]", b"[1, -2]", b"[1,,2]", b"[1, 2,]", b"[+1]", b"[1 ,2]", b"[1.5]",
                b"[2147483648]", b"null", b'["1"]', b"[1, 2", b"[[1]]"):  # fmt: skip
        odd = line.replace(b"[0, 4, 12]", bad)
        assert fastpath.prepare_chunk(odd) is None, bad
    assert fastpath.prepare_chunk(b"\n" + line) is None  # blank line
    assert fastpath.prepare_chunk(line.replace(b'"step_idx": 9', b'"step_idx": 9.0')) is None
    ok = fastpath.prepare_chunk(line.replace(b"[0, 4, 12]", b"[]"))
    assert ok is not None and len(ok.heat["block_id"]) == 0


def _heat_oracle(req, step, layer, blocks):
    out: dict[tuple[int, int, int], int] = {}
    for r, s, la, bs in zip(req, step, layer, blocks, strict=True):
        if not 0 <= la < 128:
            continue
        for b in bs:
            if b >= 0:
                out[(r, s, b)] = out.get((r, s, b), 0) | (1 << la)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_block_heat_against_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    req = rng.integers(0, 3, n)
    step = rng.integers(0, 4, n)
    layer = rng.integers(0, 128, n) if seed % 2 else rng.permutation(128)[:n] % 128
    if seed == 4:
        layer[0] = 200  # outside the mask: left out
    blocks = []
    for _ in range(n):
        b = np.sort(rng.choice(300, size=int(rng.integers(0, 30)), replace=False))
        if seed == 5 and len(b) > 1:
            b = b[::-1]  # unsorted: the dense path
        blocks.append(b)
    vals = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
    h = fastpath.block_heat(req, step, layer, vals, [len(b) for b in blocks])
    got = {
        (int(r), int(s), int(b)): int(lo) | (int(hi) << 64)
        for r, s, b, lo, hi in zip(
            h["request_id"], h["step_idx"], h["block_id"], h["lo"], h["hi"], strict=True
        )  # fmt: skip
    }
    assert got == _heat_oracle(req.tolist(), step.tolist(), layer.tolist(),
                               [b.tolist() for b in blocks])  # fmt: skip
    keys = list(zip(h["request_id"].tolist(), h["step_idx"].tolist(), h["block_id"].tolist()))
    assert keys == sorted(keys)


def test_broken_pool_falls_back_to_this_process(workspace, tmp_path: Path, monkeypatch) -> None:
    data = b"\n".join(_base_lines(tmp_path)) + b"\n"
    path = tmp_path / "t" / "trace_steps.jsonl"
    path.parent.mkdir()
    path.write_bytes(data)
    monkeypatch.setenv("STUDIO_DSA_WORKERS", "2")
    pool = ingest_mod._pool(2)
    assert pool is not None
    pool.shutdown()  # submit now raises: every chunk is done here
    tid = _ingest(workspace, path, 5000)
    steps, heat, bad, meta = _tables(workspace, tid)
    want_rows, want_heat, _ = _oracle(data)
    assert [r[:3] for r in steps] == [r[:3] for r in want_rows] and not bad
    assert _combined_heat(heat) == want_heat
    assert ingest_mod._POOL is None or ingest_mod._POOL is not pool


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.one_of(
                st.integers(0, 10**9 + 5),
                st.integers(-5, -1),
                st.floats(allow_nan=False, allow_infinity=False),
                st.text(max_size=3),
                st.none(),
            ),
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([",", ", "]),
)
def test_digits_and_commas_matches_the_validators_rule(lists, sep) -> None:
    """Oracle: json.loads + "every element a non-negative int" (the ingest validator's rule for
    selected_token_pos): the fast path's byte check agrees on JSON a writer produces."""
    bodies = [sep.join(json.dumps(v) for v in vals).encode() for vals in lists]
    data, spans = b"", []
    for b in bodies:
        data += b'{"p":['
        if b:
            spans.append((len(data), len(data) + len(b)))
        data += b + b"]}\n"
    assume(spans)
    want = all(type(v) is int and v >= 0 for vals in lists for v in vals)
    assert fastpath.digits_and_commas(data, spans) == want


@pytest.mark.parametrize(
    "body, ok",
    [(b"0,1,22", True), (b"0, 1, 22", True), (b"1180591620717411303424", True),
     (b"1,-1", False), (b"1.5", False), (b"1e3", False), (b'"1"', False), (b"[1]", False),
     (b"null", False), (b"true", False), (b"1 ,2", False), (b"0,0", True)],
)  # fmt: skip
def test_digits_and_commas_cases(body: bytes, ok: bool) -> None:
    assert fastpath.digits_and_commas(b"[" + body + b"]", [(1, 1 + len(body))]) is ok


@pytest.mark.parametrize(
    "value, ok",
    [(b"[1,2]", True), (b" [1, 2]", True), (b"null", True), (b"[]", True), (b"[[1]]", False),
     (b'"ab"', False), (b"[1.5]", False), (b"[-1]", False), (b"7", False)],
)  # fmt: skip
def test_positions_plain(value: bytes, ok: bool) -> None:
    line = b'{"selected_token_pos":' + value + b',"selected_block_ids":[0]}\n'
    assert fastpath.positions_plain(line + b'{"selected_token_pos":[3]}\n') is ok


@pytest.mark.parametrize("where", [b'"synthetic-prefix', b'"offset_p50"', b'"kv_fetch"'])
def test_invalid_utf8_never_raises_and_every_line_is_counted(
    workspace, tmp_path: Path, where: bytes
) -> None:
    """A byte that is not UTF-8 inside a line: the line is ingested or reported, never a raw error."""
    lines = _base_lines(tmp_path)
    lines[1] = lines[1].replace(where, where[:2] + b"\xc2\x41" + where[2:], 1)
    path = tmp_path / "trace_steps.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = ingest_mod.ingest_path(workspace, path)
    assert res.rows + res.bad_lines == len(lines)


@pytest.mark.parametrize("prefix", ["", "xx"])
def test_a_long_non_ascii_string_as_a_number_is_one_bad_line(
    workspace, tmp_path: Path, prefix: str
) -> None:
    """The input the fuzzer found in CI (fixed in 9d043d0): DuckDB's cast error quoted the value
    cut at a byte count, mid-character, and its Python binding raised UnicodeDecodeError on its
    own message. The file is plain ASCII (\\u20ac escapes); two offsets, so one of them splits a
    3-byte character wherever DuckDB cuts."""
    lines = _base_lines(tmp_path)
    rec = json.loads(lines[1])
    rec["offset_p50"] = prefix + "\u20ac" * 60
    lines[1] = json.dumps(rec).encode()
    path = tmp_path / "trace_steps.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    res = ingest_mod.ingest_path(workspace, path)
    steps, _, bad, _ = _tables(workspace, res.trace_id)
    assert bad == [(2, "offset_p50 is not an integer")]
    assert res.rows == len(steps) == len(lines) - 1 and res.bad_lines == 1


def test_fast_path_declines_a_chunk_duckdb_cannot_decode(tmp_path: Path, monkeypatch) -> None:
    """DuckDB's result conversion raised UnicodeDecodeError (not a duckdb.Error) on a fuzzed
    chunk in CI: the fast path must decline it (the exact path then reports the line)."""

    class Undecodable:
        def execute(self, *_a, **_k):
            return self

        def sql(self, *_a, **_k):
            return self

        def to_arrow_table(self):
            raise UnicodeDecodeError("utf-8", b"\xc2\x41", 0, 1, "invalid continuation byte")

    prep = fastpath.prepare_chunk(b"\n".join(_base_lines(tmp_path)) + b"\n")
    assert prep is not None  # a clean chunk: the fast path would take it
    monkeypatch.setattr(fastpath._LOCAL, "con", Undecodable(), raising=False)
    assert fastpath.parse_scalars(prep) is False
