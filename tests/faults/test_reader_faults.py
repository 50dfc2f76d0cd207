"""DSA traces, profiles and checkpoint inspection under bad input (issue 17 item 6).

Each case runs the real CLI in a subprocess in a fresh workspace and asserts the line, the exit
code (docs/RELIABILITY.md: 2 bad input, 1 finished with reported problems), the rows that must
remain and that no traceback reached the terminal. Oracles: Python's own json / gzip modules
on the same bytes, and the clean file ingested beside the damaged one.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import duckdb
import pytest

from studio_backend.dsa.synthetic import generate_trace
from tests.faults.test_workspace_faults import assert_clear, studio

ROWS = 24  # 2 requests x 3 steps x 4 layers


def query(ws: Path, sql: str, *params: object) -> list[tuple]:
    con = duckdb.connect(str(ws / "studio.duckdb"), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dsa") / "t"
    generate_trace(out, requests=2, steps=3, layers=4)
    path = out / "trace_steps.jsonl"
    assert path.read_bytes().count(b"\n") == ROWS
    return path


def steps_table(ws: Path) -> list[tuple]:
    """dsa_steps without its trace id, in line order (compares two ingests of one content)."""
    return query(ws, "SELECT * EXCLUDE (trace_id) FROM dsa_steps ORDER BY line_no")


def _place(tmp: Path, name: str, data: bytes) -> Path:
    d = tmp / name
    d.mkdir()
    path = d / ("trace_steps.jsonl.gz" if name.endswith("gz") else "trace_steps.jsonl")
    path.write_bytes(data)
    return path


# ---- DSA: no silent loss -----------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["jsonl", "gz"])
def test_dsa_last_line_without_newline_is_read(trace: Path, tmp_path: Path, gz: bool) -> None:
    data = trace.read_bytes()[:-1]  # the producer never wrote the final newline
    path = _place(tmp_path, "nonl_gz" if gz else "nonl", gzip.compress(data) if gz else data)
    clean = _place(tmp_path, "clean", trace.read_bytes())
    ws, ws_clean = tmp_path / "ws", tmp_path / "ws_clean"
    out = studio(ws, "dsa", "ingest", str(path))
    assert_clear(out, 0)
    assert f": {ROWS} rows" in out.stdout and "bad lines" not in out.stdout
    assert_clear(studio(ws_clean, "dsa", "ingest", str(clean)), 0)
    # byte offsets and every column equal the clean file's (plain: same bytes; gzip: offsets of
    # the uncompressed lines, which are the same)
    assert steps_table(ws) == steps_table(ws_clean)
    # a rerun reads nothing twice
    assert_clear(studio(ws, "dsa", "ingest", str(path)), 0)
    assert query(ws, "SELECT count(*) FROM dsa_steps")[0][0] == ROWS
    assert query(ws, "SELECT count(*) FROM dsa_traces")[0][0] == 1


def test_dsa_line_completed_after_the_ingest_is_not_a_blank_line(trace, tmp_path) -> None:
    """The ingest took a last line without newline; the writer then adds the newline and more
    lines: the rerun reads them with the right line numbers (no blank line, no bad line)."""
    lines = trace.read_bytes().split(b"\n")[:ROWS]
    path = _place(tmp_path, "growing", b"\n".join(lines[:20]))
    ws = tmp_path / "ws"
    assert "20 rows" in studio(ws, "dsa", "ingest", str(path)).stdout
    with path.open("ab") as fh:
        fh.write(b"\n" + b"\n".join(lines[20:]) + b"\n")
    out = studio(ws, "dsa", "ingest", str(path))
    assert_clear(out, 0)
    assert f": {ROWS} rows" in out.stdout and "bad lines" not in out.stdout
    clean = _place(tmp_path, "clean", trace.read_bytes())
    assert_clear(studio(tmp_path / "ws_clean", "dsa", "ingest", str(clean)), 0)
    assert steps_table(ws) == steps_table(tmp_path / "ws_clean")
    assert query(ws, "SELECT lines_read, bytes_read FROM dsa_traces") == [
        (ROWS, len(trace.read_bytes()))
    ]


def test_dsa_last_line_exact_path_agrees_with_fast_path(trace: Path, tmp_path: Path) -> None:
    """The same file through the fast path and, with it refused, the exact (DuckDB) path."""
    from studio_backend.dsa import fastpath, ingest
    from studio_backend.workspace import open_workspace

    path = _place(tmp_path, "nonl", trace.read_bytes()[:-1])
    tables = []
    for refuse in (False, True):
        ws_dir = tmp_path / f"ws{refuse}"
        ws = open_workspace(ws_dir)
        real = fastpath.prepare_chunk
        if refuse:
            fastpath.prepare_chunk = lambda data, size=None: None
        try:
            ing = ingest.Ingestor(ws, path)
            ing.poll()
            ing.finish()
            assert ing.chunks["exact" if refuse else "fast"] >= 1
            assert ing.result().rows == ROWS
        finally:
            fastpath.prepare_chunk = real
            ws.close()
        tables.append(steps_table(ws_dir))
    assert tables[0] == tables[1] and len(tables[0]) == ROWS


def _kept_before_cut(raw: bytes) -> int:
    """Oracle: complete lines zlib can decompress from a cut gzip."""
    return zlib.decompressobj(wbits=31).decompress(raw).count(b"\n")


def test_dsa_truncated_gzip_is_reported(trace: Path, tmp_path: Path) -> None:
    full = gzip.compress(trace.read_bytes())
    cut = full[: len(full) // 2]
    path = _place(tmp_path, "trunc_gz", cut)
    kept = _kept_before_cut(cut)
    assert 0 < kept < ROWS
    ws = tmp_path / "ws"
    for _ in range(2):  # the rerun reports it again, and adds nothing
        out = studio(ws, "dsa", "ingest", str(path))
        assert_clear(out, 1, str(path), "FILE IS TRUNCATED", f"{kept} rows before the cut")
        assert query(ws, "SELECT count(*) FROM dsa_steps")[0][0] == kept
        errors = query(ws, "SELECT line_no, error FROM dsa_bad_lines")
        assert len(errors) == 1 and errors[0][0] == kept + 1
        assert errors[0][1].startswith("file is truncated")
    # the summary of the same file says so too, and covers the same records
    out = studio(ws, "dsa", "summarize", str(path), "--out", str(tmp_path / "s.json"))
    assert_clear(out, 1, "FILE IS TRUNCATED")
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["unique_blocks"]["count"] == kept and "truncated" in summary


@pytest.mark.parametrize("cmd", ["ingest", "summarize"])
def test_dsa_not_gzip_is_one_clear_line(trace: Path, tmp_path: Path, cmd: str) -> None:
    path = tmp_path / "trace_steps.jsonl.gz"
    path.write_bytes(trace.read_bytes())  # plain text named .gz
    args = ["--out", str(tmp_path / "s.json")] if cmd == "summarize" else []
    out = studio(tmp_path / "ws", "dsa", cmd, str(path), *args)
    assert_clear(out, 2, str(path), "not a gzip file")


def _mutations() -> dict[str, object]:
    def setp(key, value):
        return lambda r: r["prefix"].__setitem__(key, value)

    def set_(key, value):
        return lambda r: r.__setitem__(key, value)

    return {
        "positions_strings": set_("selected_token_pos", ["a", "b"]),
        "positions_2pow70": set_("selected_token_pos", [2**70]),
        "positions_floats": set_("selected_token_pos", [1.5]),
        "seq_len_2pow70": set_("seq_len_current", 2**70),
        "request_id_1e300": set_("request_id", 1e300),
        "ratio_string": setp("intersection_ratio", "x"),
        "prefix_a_list": set_("prefix", [1]),
        "blocks_a_string": set_("selected_block_ids", "abc"),
        "intersection_null": setp("intersection_blocks", None),
        "block_size_zero": set_("block_size_tokens", 0),
    }


@pytest.mark.parametrize("case", list(_mutations()))
def test_dsa_summarize_wrong_types_are_bad_lines(trace: Path, tmp_path: Path, case: str) -> None:
    lines = trace.read_text().splitlines()
    rec = json.loads(lines[5])
    _mutations()[case](rec)
    bad = tmp_path / "bad" / "trace_steps.jsonl"
    bad.parent.mkdir()
    bad.write_text("\n".join([*lines[:5], json.dumps(rec), *lines[6:]]) + "\n")
    without = tmp_path / "without" / "trace_steps.jsonl"
    without.parent.mkdir()
    without.write_text("\n".join([*lines[:5], *lines[6:]]) + "\n")
    ws = tmp_path / "ws"
    out = studio(ws, "dsa", "summarize", str(bad), "--out", str(tmp_path / "bad.json"))
    assert_clear(out, 0)
    assert f"{ROWS - 1} records summarised" in out.stdout and "1 bad lines skipped" in out.stdout
    assert_clear(studio(ws, "dsa", "summarize", str(without), "--out", str(tmp_path / "w.json")), 0)
    got = json.loads((tmp_path / "bad.json").read_text())
    assert got.pop("bad_lines") == 1
    assert got == json.loads((tmp_path / "w.json").read_text())  # the bad line counts nowhere


@pytest.mark.parametrize(
    "case", ["seq_len_2pow70", "request_id_1e300", "ratio_string", "prefix_a_list"]
)
def test_dsa_ingest_wrong_types_are_bad_lines(trace: Path, tmp_path: Path, case: str) -> None:
    lines = trace.read_text().splitlines()
    rec = json.loads(lines[5])
    _mutations()[case](rec)
    bad = _place(
        tmp_path, "bad", ("\n".join([*lines[:5], json.dumps(rec), *lines[6:]]) + "\n").encode()
    )
    ws = tmp_path / "ws"
    out = studio(ws, "dsa", "ingest", str(bad))
    assert_clear(out, 0)
    assert f"{ROWS - 1} rows, 1 bad lines (first: line 6" in out.stdout
    assert query(ws, "SELECT count(*) FROM dsa_steps WHERE line_no = 6")[0][0] == 0


def _position_mutations() -> dict[str, tuple[object, bool]]:
    """Lines the full validator (``dsa summarize``) refuses; True: the ingest refuses them too
    (positions that are not non-negative integers, unordered offsets or blocks), False: kept as
    a row because only the positions' values are wrong (not checked by the ingest: nothing it
    stores comes from them, SPARSE_ATTENTION.md)."""

    def out_of_range(r):
        r["selected_token_pos"] = [*r["selected_token_pos"][:-1], r["seq_len_current"]]

    def negative(r):
        r["selected_token_pos"] = [-1, *r["selected_token_pos"][1:]]

    def count_off(r):
        r["unique_token_pos_count"] += 1

    def blocks_off(r):  # a block no position falls in (sorted, unique, counted)
        r["selected_block_ids"] = sorted({*r["selected_block_ids"], 10**6})
        r["unique_blocks"] = len(r["selected_block_ids"])

    def blocks_unsorted(r):
        r["selected_block_ids"] = r["selected_block_ids"][::-1]

    def blocks_miscounted(r):
        r["unique_blocks"] += 1

    def offsets(r):
        r["offset_min"] = r["offset_max"] + 1

    def nested(r):
        r["selected_token_pos"] = [r["selected_token_pos"]]

    def huge(r):
        r["selected_token_pos"] = [2**31, *r["selected_token_pos"][1:]]

    m = _mutations()
    return {
        "positions_strings": (m["positions_strings"], True),
        "positions_2pow70": (m["positions_2pow70"], False),
        "positions_floats": (m["positions_floats"], True),
        "positions_negative": (negative, True), "positions_nested": (nested, True),
        "positions_2pow31": (huge, False), "blocks_unsorted": (blocks_unsorted, True),
        "blocks_miscounted": (blocks_miscounted, True), "offsets_unordered": (offsets, True),
        "positions_out_of_range": (out_of_range, False), "positions_count_off": (count_off, False),
        "positions_blocks_off": (blocks_off, False),
    }  # fmt: skip


@pytest.mark.parametrize("path", ["fast", "exact"])
@pytest.mark.parametrize("case", list(_position_mutations()))
def test_dsa_ingest_positions_same_verdict_on_every_path(trace, tmp_path, case, path) -> None:
    """Issue 17: the fast path cut selected_token_pos unchecked, so a line of strings, floats or
    negative positions was stored. Now the fast path, the exact (DuckDB) path and the validator
    give one verdict per line; the other 23 rows equal the clean file's."""
    from studio_backend.dsa import fastpath, ingest
    from studio_backend.dsa.schema import validate_record
    from studio_backend.workspace import open_workspace

    mutate, refused = _position_mutations()[case]
    lines = trace.read_text().splitlines()
    rec = json.loads(lines[5])
    mutate(rec)
    assert validate_record(rec), "the full validator (dsa summarize) refuses every case"
    data = ("\n".join([*lines[:5], json.dumps(rec), *lines[6:]]) + "\n").encode()
    bad = _place(tmp_path, "bad", data)
    ws = open_workspace(tmp_path / "ws")
    real = fastpath.prepare_chunk
    if path == "exact":
        fastpath.prepare_chunk = lambda data, size=None: None
    try:
        ing = ingest.Ingestor(ws, bad)
        ing.poll()
        ing.finish()
        res = ing.result()
        if path == "fast" and not refused:
            assert ing.chunks["fast"] >= 1  # a kept line does not push the chunk off the fast path
    finally:
        fastpath.prepare_chunk = real
        ws.close()
    assert (res.rows, res.bad_lines) == ((ROWS - 1, 1) if refused else (ROWS, 0))
    assert query(tmp_path / "ws", "SELECT line_no FROM dsa_bad_lines") == (
        [(6,)] if refused else []
    )
    clean = _place(tmp_path, "clean", trace.read_bytes())
    ws2 = open_workspace(tmp_path / "ws2")
    try:
        ing = ingest.Ingestor(ws2, clean)
        ing.poll()
        ing.finish()
    finally:
        ws2.close()
    sql = "SELECT * EXCLUDE (trace_id, byte_offset) FROM dsa_steps WHERE line_no <> 6 ORDER BY 1"
    assert query(tmp_path / "ws", sql) == query(tmp_path / "ws2", sql)  # offsets moved by the edit


def test_dsa_ingest_fifo_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "trace_steps.jsonl"
    os.mkfifo(fifo)
    out = studio(tmp_path / "ws", "dsa", "ingest", str(fifo), timeout=60)
    assert_clear(out, 2, str(fifo), "not a regular file")


# ---- profiles -----------------------------------------------------------------------------


def _ev(name: str, ts: object, dur: object) -> dict:
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur}


GOOD = [_ev("aten::mm", 0, 10), _ev("aten::add", 20, 5), _ev("aten::mm", 30, 10)]


def _profile(tmp: Path, extra: list[dict], name: str = "p.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps({"traceEvents": [*GOOD, *extra]}))
    return path


def _totals(ws: Path) -> dict[str, int]:
    return dict(
        query(ws, "SELECT name, sum(dur_ns)::BIGINT FROM profile_events GROUP BY name ORDER BY 1")
    )


@pytest.mark.parametrize(
    ("ts", "dur", "why"),
    [
        (40, -7, "negative duration"),
        ("abc", 3, "ts 'abc'"),
        (40, "zz", "dur 'zz'"),
        (1e300, 1, "ts '1e+300'"),
        (40, 1e300, "dur '1e+300'"),
        (40, True, "dur 'True'"),
    ],
    ids=["negative", "ts_string", "dur_string", "ts_1e300", "dur_1e300", "dur_bool"],
)
def test_profile_bad_times_are_counted_bad_events(tmp_path, ts, dur, why) -> None:
    path = _profile(tmp_path, [_ev("aten::bad", ts, dur)])
    ws = tmp_path / "ws"
    out = studio(ws, "profile", "ingest", str(path))
    assert_clear(out, 1, str(path), "1 bad events skipped", f"event 3: {why}")
    assert _totals(ws) == {"aten::add": 5000, "aten::mm": 20000}  # no negative total, no loss
    assert query(ws, "SELECT n_events, bad_events FROM profiles") == [(3, 1)]


def test_profile_2pow70_is_one_clear_line(tmp_path) -> None:
    """ijson's C parser refuses integers beyond 64 bits: the whole file is bad input, and
    nothing of it is stored."""
    path = _profile(tmp_path, [_ev("aten::bad", 2**70, 1)])
    ws = tmp_path / "ws"
    out = studio(ws, "profile", "ingest", str(path))
    assert_clear(out, 2, str(path), "integer overflow")
    assert query(ws, "SELECT count(*) FROM profiles")[0][0] == 0
    assert query(ws, "SELECT count(*) FROM profile_events")[0][0] == 0


def test_profile_numeric_strings_are_times(tmp_path) -> None:
    """torch_npu's trace_view.json writes ts / dur as strings: those are read as numbers."""
    ws = tmp_path / "ws"
    out = studio(ws, "profile", "ingest", str(_profile(tmp_path, [_ev("aten::y", "60.5", "2.5")])))
    assert_clear(out, 0)
    assert _totals(ws)["aten::y"] == 2500


def test_profile_reingest_is_idempotent(tmp_path) -> None:
    path = _profile(tmp_path, [])
    copy = tmp_path / "copy.json"
    copy.write_bytes(path.read_bytes())
    ws = tmp_path / "ws"
    first = studio(ws, "profile", "ingest", str(path))
    assert_clear(first, 0)
    pid = first.stdout.split()[1]
    for again in (path, copy):  # same content, same or other path: the existing profile
        out = studio(ws, "profile", "ingest", str(again))
        assert_clear(out, 0)
        assert out.stdout.startswith(f"profile {pid} (already ingested: same content)")
    assert query(ws, "SELECT count(*) FROM profiles")[0][0] == 1
    assert query(ws, "SELECT count(*) FROM profile_events")[0][0] == 3
    other = _profile(tmp_path, [_ev("aten::z", 50, 1)], "other.json")
    assert_clear(studio(ws, "profile", "ingest", str(other)), 0)
    assert query(ws, "SELECT count(*) FROM profiles")[0][0] == 2


def test_profile_fifo_is_never_opened(tmp_path) -> None:
    fifo = tmp_path / "trace.pt.trace.json"
    os.mkfifo(fifo)
    out = studio(tmp_path / "ws", "profile", "ingest", str(fifo), timeout=60)
    assert_clear(out, 2, str(fifo), "not a regular file")


# ---- checkpoint inspection ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from studio_backend.models.create import create_model

    return create_model(tmp_path_factory.mktemp("ckpt") / "tiny", preset="tiny", seed=1)


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("num_hidden_layers", 10**8, ["num_hidden_layers=100000000", "hold 3 layers"]),
        ("num_experts", 10**8, ["num_experts=100000000", "hold 8 experts"]),
    ],
)
def test_inspect_checkpoint_config_beyond_files(tiny_ckpt, tmp_path, key, value, words) -> None:
    ckpt = tmp_path / "huge"
    subprocess.run(["cp", "-a", str(tiny_ckpt), str(ckpt)], check=True)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg[key] = value
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "inspect-checkpoint", str(ckpt)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "STUDIO_WORKSPACE": str(tmp_path / "ws")},
    )  # fmt: skip
    assert_clear(out, 2, str(ckpt / "config.json"), *words)


def test_inspect_checkpoint_ep_beyond_experts(tiny_ckpt, tmp_path) -> None:
    out = studio(tmp_path / "ws", "inspect-checkpoint", str(tiny_ckpt), "--ep", "100000000")
    assert_clear(out, 2, "ep=100000000", "larger than the number of experts (8)")


def test_inspect_checkpoint_few_missing_layers_still_listed(tiny_ckpt, tmp_path) -> None:
    """Within the bound, missing layers are reported by name (exit 1, nothing refused)."""
    ckpt = tmp_path / "more"
    subprocess.run(["cp", "-a", str(tiny_ckpt), str(ckpt)], check=True)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["num_hidden_layers"] += 1
    (ckpt / "config.json").write_text(json.dumps(cfg))
    out = studio(tmp_path / "ws", "inspect-checkpoint", str(ckpt), "--json")
    assert out.returncode == 1 and "Traceback" not in out.stderr + out.stdout
    report = json.loads(out.stdout)
    assert report["missing"] and all(".layers.3." in n for n in report["missing"])
