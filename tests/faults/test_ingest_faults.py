"""Bad dumps: every per-file, per-tensor and side-file problem is an error row, the rest of the run
completes, and nothing single-rank is "verified" when shards are expected (issue 17 items 1-2).

Each case runs the real CLI in a subprocess on a damaged copy of a small synthetic dump (fresh
workspace) and compares its tables with a clean ingest of the same dump: the rows that must
remain are those the damage does not touch. Exit codes: docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import torch

from studio_backend.dumps import synthetic as S

REPO = Path(__file__).resolve().parents[2]
TOKENS = (3,)  # one step: the cases are about files, not sizes


def studio(ws: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDIO_WORKSPACE": str(ws)}
    return subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", *args],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout,
    )  # fmt: skip


def assert_clear(out: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    for w in words:
        assert w in out.stderr, out.stderr


def make_msit(tmp: Path, name: str = "dump", **kw) -> Path:
    cfg = S.SynthConfig()
    return S.write_msit(tmp / name, cfg, S.make_truth(cfg, list(TOKENS), seed=0), 2, **kw)


def make_msprobe(tmp: Path, name: str = "probe") -> Path:
    cfg = S.SynthConfig()
    return S.write_msprobe(tmp / name, cfg, S.make_truth(cfg, list(TOKENS), seed=0), 2)


def snapshot(ws: Path) -> dict:
    """The run's tables, keyed by tensor (not by path or run id, which differ between copies)."""
    con = duckdb.connect(str(ws / "studio.duckdb"), read_only=True)
    try:
        q = con.execute
        run = q("SELECT status, tp_size FROM dump_runs").fetchall()
        report = {(s, m, io, i): v for s, m, io, i, v in q(
            "SELECT step, module, io, idx, verdict FROM dump_stitch_report").fetchall()}  # fmt: skip
        stitched = {(s, m, io, i): (tuple(sh), n, mx) for s, m, io, i, sh, n, mx in q(
            "SELECT step, module, io, idx, shape, s.numel, s.max FROM dump_tensors t "
            "LEFT JOIN dump_stats s USING (tensor_id) WHERE rank IS NULL AND part IS NULL"
        ).fetchall()}  # fmt: skip
        ranks = sorted(q(
            "SELECT step, module, io, idx, rank, shape FROM dump_tensors WHERE rank IS NOT NULL"
        ).fetchall())  # fmt: skip
        errors = q("SELECT kind, message FROM dump_ingest_errors ORDER BY id").fetchall()
        tool = q("SELECT module, io, idx, rank FROM dump_tool_stats ORDER BY ALL").fetchall()
    finally:
        con.close()
    return {"run": run, "report": report, "stitched": stitched, "ranks": ranks,
            "errors": errors, "tool": tool}  # fmt: skip


def without(d: dict, pred) -> dict:
    return {k: v for k, v in d.items() if not pred(k)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict:
    """A clean ingest of the msit dump every case damages a copy of."""
    tmp = tmp_path_factory.mktemp("clean")
    ws = tmp / "ws"
    assert_clear(studio(ws, "ingest", str(make_msit(tmp))), 0)
    snap = snapshot(ws)
    assert snap["run"] == [("done", 2)] and snap["errors"] == []
    assert set(snap["report"].values()) <= {"verified", "assumed"}
    return snap


def _rank_dirs(session: Path) -> list[Path]:
    return sorted(p for p in (session / "torch_tensors").iterdir() if p.is_dir())


def _module_dir(rank_dir: Path, suffix: str) -> Path:
    return next(d for d in sorted((rank_dir / "0").iterdir()) if d.name.endswith(suffix))


# -- item 1: the expected shape of a run ---------------------------------------------------
@pytest.mark.parametrize("order", ["ranks.json", "device ids", "pids"])
@pytest.mark.parametrize("gone", [0, 1])
def test_missing_rank_folder_is_an_error_never_tp1(clean, tmp_path, order, gone) -> None:
    session = make_msit(tmp_path)
    r0, r1 = _rank_dirs(session)
    if order == "ranks.json":
        (session / "ranks.json").write_text(json.dumps([r0.name, r1.name]))
    if order == "pids":  # msit on CPU: cpu_<pid> folders carry no device id
        r0, r1 = (r.rename(r.with_name("cpu_" + r.name.split("_")[1])) for r in (r0, r1))
    shutil.rmtree((r0, r1)[gone])
    out = studio(tmp_path / "ws", "ingest", str(session))
    why = "ranks.json lists 2" if order == "ranks.json" else "o_proj input width 8 of 16"
    if order == "pids":  # the order is the PIDs', so the absent rank cannot be named
        assert_clear(out, 1, "missing_rank", "1 of the 2 ranks of tp=2 have no folder", why,
                     "cannot be told", "add ranks.json")  # fmt: skip
    else:  # ranks.json, or npu<device>_<pid> names with device ids that fit tp=2
        assert_clear(out, 1, "missing_rank", f"rank(s) [{gone}] of tp=2 have no folder", why)
    snap = snapshot(tmp_path / "ws")
    assert snap["run"] == [("done", 2)]
    # nothing single-rank counts as stitched: every tensor failed with its missing rank named
    assert set(snap["report"]) == set(clean["report"])
    assert set(snap["report"].values()) == {"failed"} and snap["stitched"] == {}
    kept = 0 if order == "pids" else 1 - gone  # by PIDs the one folder left is "rank 0"
    rows = [r for r in clean["ranks"] if r[4] == 1 - gone]
    assert snap["ranks"] == [(*r[:4], kept, r[5]) for r in rows]  # the present rank's rows kept


def test_the_launch_that_wrote_a_dump_gives_its_tp(tmp_path) -> None:
    """No ranks.json, no config.json, one folder: only the launch record knows tp=2."""
    session = make_msit(tmp_path, config_json=False)
    shutil.rmtree(_rank_dirs(session)[1])
    ws = tmp_path / "ws"
    from studio_backend.workspace import open_workspace

    w = open_workspace(ws)  # the workspace and its tables, as a launch leaves them
    w.cursor().execute(
        "INSERT INTO launches (launch_id, engine, model_dir, host, port, tp, spec, argv, env, "
        "dump_path, log_path, status) VALUES ('L7', 'reference', 'm', '127.0.0.1', 1, 2, '{}', "
        "'[]', '{}', ?, 'log', 'stopped')",
        [str(tmp_path)],
    )
    w.close()
    out = studio(ws, "ingest", str(session))
    assert_clear(out, 1, "missing_rank", "rank(s) [1] of tp=2", "launch L7 ran with tp=2")
    snap = snapshot(ws)
    assert snap["run"] == [("done", 2)] and "verified" not in snap["report"].values()


def test_missing_rank_named_by_an_msprobe_folder(tmp_path) -> None:
    root = make_msprobe(tmp_path)
    shutil.rmtree(root / "step0" / "rank0")  # rank1 alone: its name says tp >= 2
    (root / "config.json").unlink()
    out = studio(tmp_path / "ws", "ingest", str(root))
    assert_clear(out, 1, "rank(s) [0] of tp=2 have no folder", "a folder is named rank 1")
    snap = snapshot(tmp_path / "ws")
    assert snap["run"] == [("done", 2)] and "verified" not in snap["report"].values()


def test_rerun_after_the_late_rank_arrived_restitches_at_the_right_tp(clean, tmp_path) -> None:
    """No config, no ranks.json: one folder alone is tp=1 (marked assumed in the error rows);
    once the other folder is there, a rerun drops the tp=1 stitches and stitches at tp=2."""
    session = make_msit(tmp_path, config_json=False)
    r1 = _rank_dirs(session)[1]
    aside = tmp_path / "aside"
    shutil.move(r1, aside)
    ws = tmp_path / "ws"
    assert studio(ws, "ingest", str(session)).returncode in (0, 1)
    assert snapshot(ws)["run"] == [("done", 1)]
    shutil.move(aside, r1)
    out = studio(ws, "ingest", str(session), "--model-config", str(_config(tmp_path)))
    assert_clear(out, 0)
    snap = snapshot(ws)
    assert snap["run"] == [("done", 2)]
    assert snap["report"] == clean["report"] and snap["stitched"] == clean["stitched"]
    assert snap["ranks"] == clean["ranks"]  # no duplicate rank rows from the first pass


def _config(tmp: Path) -> Path:
    f = tmp / "config.json"
    f.write_text(json.dumps(S.SynthConfig().hf_config()))
    return f


# -- item 2: per-tensor problems ---------------------------------------------------------
def test_zero_length_first_dim_gets_statistics_and_the_run_completes(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    for r in _rank_dirs(session):  # a replicated tensor with no tokens (an idle MoE expert)
        f = _module_dir(r, "layers.1.input_layernorm") / "output.pth"
        torch.save(torch.zeros(0, S.SynthConfig().hidden), f)
    assert_clear(studio(tmp_path / "ws", "ingest", str(session)), 0)
    snap = snapshot(tmp_path / "ws")
    key = (0, "model.layers.1.input_layernorm", "output", 0)
    assert snap["run"] == [("done", 2)]
    assert snap["stitched"][key][:2] == ((0, 16), 0)  # statistics: zero elements
    assert all(v[1] is not None for v in snap["stitched"].values())  # every tensor has stats
    assert without(snap["stitched"], lambda k: k == key) == without(
        clean["stitched"], lambda k: k == key
    )


def test_complex_tensor_is_refused_never_truncated(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    f = _module_dir(_rank_dirs(session)[0], "layers.0.input_layernorm") / "output.pth"
    t = torch.load(f, weights_only=True)
    torch.save(torch.complex(t, -t), f)
    out = studio(tmp_path / "ws", "ingest", str(session))
    assert_clear(out, 1, "unsupported_dtype", "complex64", "imaginary part")
    snap = snapshot(tmp_path / "ws")
    key = (0, "model.layers.0.input_layernorm", "output", 0)
    assert snap["report"][key] == "failed" and key not in snap["stitched"]
    assert not any(r[:4] == key and r[4] == 0 for r in snap["ranks"])  # no real-part row
    assert snap["stitched"] == without(clean["stitched"], lambda k: k == key)


def test_rewritten_file_replaces_its_rows_and_statistics(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    ws = tmp_path / "ws"
    assert_clear(studio(ws, "ingest", str(session)), 0)
    key = (0, "model.layers.0.input_layernorm", "output", 0)
    new = None
    for r in _rank_dirs(session):  # replicated: both ranks rewritten with the same new values
        f = _module_dir(r, "layers.0.input_layernorm") / "output.pth"
        new = torch.load(f, weights_only=True) * 2 + 1
        torch.save(new, f)
    assert_clear(studio(ws, "ingest", str(session)), 0)
    snap = snapshot(ws)
    assert snap["ranks"] == clean["ranks"]  # replaced, not duplicated
    assert snap["report"] == clean["report"]
    assert snap["stitched"][key][2] == pytest.approx(float(new.max()))  # fresh statistics
    assert without(snap["stitched"], lambda k: k == key) == without(
        clean["stitched"], lambda k: k == key
    )


def test_unreadable_file_row_clears_when_the_file_is_complete(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    f = _module_dir(_rank_dirs(session)[1], "layers.0.input_layernorm") / "output.pth"
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])  # a half-written file
    ws = tmp_path / "ws"
    assert_clear(studio(ws, "ingest", str(session)), 1, "unreadable", str(f))
    f.write_bytes(good)
    assert_clear(studio(ws, "ingest", str(session)), 0)
    snap = snapshot(ws)
    assert snap["errors"] == [] and snap["ranks"] == clean["ranks"]
    assert snap["report"] == clean["report"] and snap["stitched"] == clean["stitched"]


# -- item 2: odd files -------------------------------------------------------------------
def test_fifo_named_like_a_tensor_is_never_opened(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    fifo = _module_dir(_rank_dirs(session)[0], "layers.0.self_attn.o_proj") / "input_5.pth"
    os.mkfifo(fifo)
    out = studio(tmp_path / "ws", "ingest", str(session), timeout=60)  # it used to hang here
    assert_clear(out, 1, "skipped", "FIFO", "never opened")
    snap = snapshot(tmp_path / "ws")
    assert snap["report"] == clean["report"] and snap["stitched"] == clean["stitched"]


def test_module_folder_with_a_non_utf8_name(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    d = _module_dir(_rank_dirs(session)[0], "layers.0.self_attn.o_proj")
    os.rename(d, os.fsencode(str(d)) + b"\xff")
    out = studio(tmp_path / "ws", "ingest", str(session))
    assert_clear(out, 1, "not UTF-8", "\\xff")
    snap = snapshot(tmp_path / "ws")
    assert snap["run"] == [("done", 2)]
    mod = "model.layers.0.self_attn.o_proj"
    assert all(v == "failed" for k, v in snap["report"].items() if k[1] == mod)
    assert without(snap["report"], lambda k: k[1] == mod) == without(
        clean["report"], lambda k: k[1] == mod
    )


# -- item 2: side files ------------------------------------------------------------------
_CSV_HEAD = "NodeName,NodeType,InputOutput,Index,DataType,Shape,Max,Min,Mean,L2Norm\n"


@pytest.mark.parametrize(
    "damage, words",
    [
        (b"\xff\xfe not text\n", ("statistics.csv is not UTF-8",)),
        (b"root.model.layers.0.mlp,Linear\n", ("statistics.csv has a short",)),
    ],
)
def test_bad_statistics_csv_is_one_error_row(clean, tmp_path, damage, words) -> None:
    session = make_msit(tmp_path)
    r0 = _rank_dirs(session)[0]
    good = _module_dir(r0, "layers.0.input_layernorm")
    (good / "statistics.csv").write_text(
        _CSV_HEAD + "root.model.layers.0.input_layernorm,RMSNorm,output,0,float32,[3 16],1,-1,0,2\n"
    )
    bad = _module_dir(r0, "layers.1.input_layernorm") / "statistics.csv"
    bad.write_bytes(_CSV_HEAD.encode() + damage)
    out = studio(tmp_path / "ws", "ingest", str(session))
    assert_clear(out, 1, "unreadable", str(bad), *words)
    snap = snapshot(tmp_path / "ws")
    assert snap["run"] == [("done", 2)]
    assert snap["tool"] == [("model.layers.0.input_layernorm", "output", 0, 0)]  # the good one
    assert snap["report"] == clean["report"] and snap["stitched"] == clean["stitched"]


def test_msprobe_dump_json_with_a_number_for_output(tmp_path) -> None:
    root = make_msprobe(tmp_path)
    clean_ws = tmp_path / "clean"
    assert_clear(studio(clean_ws, "ingest", str(root)), 0)
    ref = snapshot(clean_ws)
    j = root / "step0" / "rank0" / "dump.json"
    data = json.loads(j.read_text())
    node = next(iter(data["data"]))
    data["data"][node]["output"] = 7
    j.write_text(json.dumps(data))
    out = studio(tmp_path / "ws", "ingest", str(root))
    assert_clear(out, 1, "unreadable", "has output 7")
    snap = snapshot(tmp_path / "ws")
    assert snap["report"] == ref["report"] and snap["stitched"] == ref["stitched"]
    assert snap["tool"] == [t for t in ref["tool"] if t[3] == 1]  # rank 1's dump.json kept


@pytest.mark.parametrize(
    "ranks, words",
    [
        ("dup", ("two folders claim the same rank",)),
        ("nonint", ("rank of", "'a', not a non-negative integer")),
        ("listdup", ("a folder is listed twice",)),
        ("json", ("unreadable JSON",)),
    ],
)
def test_bad_ranks_json_is_an_error_row_and_the_run_completes(clean, tmp_path, ranks, words):
    """A ranks.json that contradicts itself is ignored with an error row naming it (issue 17
    item 2): the run is ingested as without one (rank order from the folders' device ids)."""
    session = make_msit(tmp_path)
    r0, r1 = (d.name for d in _rank_dirs(session))
    body = {"dup": {r0: 0, r1: 0}, "nonint": {r0: "a", r1: 1}, "listdup": [r0, r0, r1]}
    f = session / "ranks.json"
    f.write_text(json.dumps(body[ranks]) if ranks in body else "[1, 2")
    out = studio(tmp_path / "ws", "ingest", str(session))
    assert_clear(out, 1, "bad_ranks_json", *words, "ignored")
    snap = snapshot(tmp_path / "ws")
    assert snap["run"] == [("done", 2)]
    assert snap["report"] == clean["report"] and snap["stitched"] == clean["stitched"]
    assert snap["ranks"] == clean["ranks"]
    assert [k for k, _ in snap["errors"]] == ["bad_ranks_json"]  # npu<id>_<pid>: ordered
    assert str(f) in out.stderr


def test_unreadable_config_json_is_an_error_row(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    (session / "config.json").write_text('{"num_attention_heads": 4,')
    out = studio(tmp_path / "ws", "ingest", str(session))
    assert_clear(out, 1, "bad_config", "unreadable JSON", "ignored")
    snap = snapshot(tmp_path / "ws")
    assert snap["run"][0][0] == "done" and snap["ranks"] == clean["ranks"]


def test_config_with_zero_heads(clean, tmp_path) -> None:
    session = make_msit(tmp_path)
    cfg = json.loads((session / "config.json").read_text())
    cfg["num_attention_heads"] = 0
    (session / "config.json").write_text(json.dumps(cfg))
    out = studio(tmp_path / "ws", "ingest", str(session))
    assert_clear(out, 1, "bad_config", "num_attention_heads = 0 is not a positive integer")
    snap = snapshot(tmp_path / "ws")
    assert snap["run"] == [("done", 2)]
    qkv = [k for k in snap["report"] if k[1].endswith("qkv_proj") and k[2] == "output"]
    assert qkv and all(snap["report"][k] not in ("verified", "assumed") for k in qkv)
    assert without(snap["report"], lambda k: k in qkv) == without(
        clean["report"], lambda k: k in qkv
    )


def test_one_tensor_whose_statistics_fail_does_not_stop_the_rest(clean, tmp_path) -> None:
    """A stitched tensor read from its rank file (replicated), deleted before its statistics:
    one `stats_failed` row, every other tensor gets its statistics, the run ends done."""
    session = make_msit(tmp_path)
    ws = tmp_path / "ws"
    assert_clear(studio(ws, "ingest", str(session), "--no-stats"), 0)
    con = duckdb.connect(str(ws / "studio.duckdb"), read_only=True)
    step, module, io, idx, src = con.execute(
        "SELECT step, module, io, idx, source_file FROM dump_tensors WHERE rank IS NULL "
        "AND source_file IS NOT NULL ORDER BY tensor_id LIMIT 1"
    ).fetchone()
    con.close()
    Path(src).unlink()
    out = studio(ws, "ingest", str(session))
    assert_clear(out, 1, "stats_failed", src)
    snap = snapshot(ws)
    key = (step, module, io, idx)
    assert snap["run"] == [("done", 2)] and snap["stitched"][key][1] is None
    assert without(snap["stitched"], lambda k: k == key) == without(
        clean["stitched"], lambda k: k == key
    )
