"""Reading commands work while the studio owns the workspace (issue 18 item 6)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from studio_backend.errors import StudioError
from studio_backend.workspace import open_workspace
from studio_backend.workspace.read_service import query

REPO = Path(__file__).resolve().parent.parent


def studio(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(ws), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


@pytest.fixture
def owned(tmp_path: Path):
    ws = open_workspace(tmp_path / "ws", owner=True, url="http://127.0.0.1:1")
    ws.log("test", "one activity row")
    yield ws
    ws.close()


def test_info_reads_through_the_studio(owned) -> None:
    out = studio(owned.root, "info", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["tables"] == owned.table_counts() and info["tables"]["activity"] == 1
    assert info["schema_version"] == owned.schema_version()


def test_writing_commands_are_still_refused(owned, tmp_path: Path) -> None:
    out = studio(owned.root, "ingest", str(tmp_path))
    assert out.returncode == 2 and "in use by the studio" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_service_runs_only_one_select(owned) -> None:
    sock = Path(json.loads((owned.root / "owner.json").read_text())["socket"])
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert query(sock, "SELECT count(*) AS n FROM activity").column("n").to_pylist() == [1]
    for sql in (
        "DELETE FROM activity",
        "SELECT 1; DELETE FROM activity",
        "CREATE TABLE x (a INT)",
        "COPY activity TO '/tmp/x.csv'",
    ):
        with pytest.raises(StudioError, match="read-only"):
            query(sock, sql)
    assert owned.table_counts()["activity"] == 1


def test_socket_removed_when_the_studio_closes(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws", owner=True)
    sock = Path(json.loads((ws.root / "owner.json").read_text())["socket"])
    assert sock.exists()
    ws.close()
    assert not sock.exists() and not (ws.root / "owner.json").exists()


def test_stored_expert_load_is_shown_while_the_studio_runs(tmp_path: Path) -> None:
    import torch

    from studio_backend.moe.cli import describe, import_source

    load = tmp_path / "load.pt"
    torch.save(torch.tensor([[5, 0, 3, 1], [2, 2, 2, 2]]), str(load))
    ws = open_workspace(tmp_path / "ws", owner=True)
    try:
        [name] = import_source(ws, str(load), name="vllm-load")
        want = json.loads(json.dumps(describe(ws, name), default=str))
        out = studio(ws.root, "experts", name, "--json")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)["sources"][0]
        assert got["counts"] == want["counts"] and got["layers"] == want["layers"]
        refused = studio(ws.root, "experts", str(load), "--name", "again")
        assert refused.returncode == 2 and "owned by the running studio" in refused.stderr
    finally:
        ws.close()


def _json(out: subprocess.CompletedProcess):
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _records(df) -> list[dict]:
    """What the commands print for a DataFrame (their JSON), computed in the owner."""
    return json.loads(df.to_json(orient="records", date_format="iso"))


def test_dump_runs_and_stored_statistics_while_the_studio_runs(owned, tmp_path: Path) -> None:
    pytest.importorskip("studio_backend.dumps.query", reason="needs the dumps package")
    from studio_backend.dumps.cli import stats_records
    from studio_backend.dumps.cli_read import RUN_COLUMNS
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.dumps.query import list_runs
    from tests.analysis.dumpdata import write_dump

    session, _ = write_dump(tmp_path / "dump")
    run_id = ingest_dump(owned, session)
    runs = _json(studio(owned.root, "runs", "--json"))
    want = json.loads(json.dumps(
        list_runs(owned)[list(RUN_COLUMNS)].to_dict(orient="records"), default=str
    ))  # fmt: skip
    assert runs == want and [r["run_id"] for r in runs] == [run_id]
    # `studio stats` prints the statistics stored at ingest, for the dump folder or the run id
    oracle = json.loads(json.dumps(stats_records(owned, run_id, "layers\\.1\\.", None, False)))
    for target in (str(session), run_id):
        out = studio(owned.root, "stats", target, "--module", "layers\\.1\\.", "--json")
        assert out.returncode == 0, out.stderr
        got = [json.loads(line) for line in out.stdout.splitlines()]
        assert got == oracle and len(got) > 3
    top = next(r for r in oracle if r["module"] == "model.layers.1.input_layernorm"
               and r["io"] == "input")  # fmt: skip
    assert top["top_channels"][0]["channel"] == 42  # the planted outlier channel
    # a dump not ingested yet cannot be ingested from here: a clear message, no traceback
    other, _ = write_dump(tmp_path / "other")
    out = studio(owned.root, "stats", str(other))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "not ingested" in out.stderr and "Dumps page" in out.stderr


def test_profiles_traces_and_bench_runs_while_the_studio_runs(owned, tmp_path: Path) -> None:
    from studio_backend.bench.results import export_run, list_runs, save_result
    from studio_backend.trace import analysis
    from studio_backend.trace.diff import diff
    from studio_backend.trace.ingest import ingest_profile
    from tests.bench.test_results import _doc
    from tests.trace.fixtures import write_kineto_gpu

    pid = ingest_profile(owned, write_kineto_gpu(tmp_path / "gpu.json"), name="gpu")
    assert _json(studio(owned.root, "profile", "list", "--json")) == _records(
        analysis.list_profiles(owned)
    )
    top = _json(studio(owned.root, "profile", "show", pid, "top", "--json"))
    assert top == _records(analysis.top(owned, pid)) and top[0]["name"]
    mods = _json(studio(owned.root, "profile", "show", pid, "modules", "--json"))
    assert mods == _records(analysis.by_module(owned, pid))
    d = _json(studio(owned.root, "profile", "diff", pid, pid, "--json"))
    assert d == _records(diff(owned, pid, pid)) and {r["delta_us"] for r in d} == {0.0}
    assert _json(studio(owned.root, "trace", "list", "--json")) == []  # no module trace stored
    save_result(owned, _doc())
    out = studio(owned.root, "bench", "list")
    assert out.returncode == 0, out.stderr
    assert out.stdout == list_runs(owned).to_string(index=False) + "\n"
    dest = tmp_path / "run.json"
    out = studio(owned.root, "bench", "export", "abc123", "--out", str(dest))
    assert out.returncode == 0, out.stderr
    want = export_run(owned, "abc123")  # the same document as `bench export` without a studio
    assert json.loads(dest.read_text()) == json.loads(json.dumps(want, default=str))
    # writing twins are still refused with the owner's message
    refused = studio(owned.root, "bench", "import", str(dest))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_launches_listed_and_logged_while_the_studio_runs(owned, tmp_path: Path) -> None:
    from studio_backend.launch.spec import LaunchSpec
    from studio_backend.launch.supervisor import Supervisor
    from tests.launch.conftest import free_port, standin

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    sup = Supervisor(owned, poll_s=0.1)
    port = free_port()
    launch = sup.start(LaunchSpec("reference", str(tmp_path / "m"), port=port),
                       command=standin(port))  # fmt: skip
    try:
        sup.wait_status(launch.launch_id, ("ready",), 30)
        rows = _json(studio(owned.root, "launches", "--json"))
        assert rows == json.loads(
            json.dumps([sup.describe(sup.get(launch.launch_id))], default=str)
        )
        assert rows[0]["status"] == "ready"
        log = studio(owned.root, "launches", "--log", launch.launch_id, "--lines", "5")
        assert log.returncode == 0, log.stderr
        assert log.stdout.splitlines() == sup.log_tail(launch.launch_id, 5)
        stop = studio(owned.root, "launches", "--stop", launch.launch_id)  # writes: refused
        assert stop.returncode == 2 and "Traceback" not in stop.stderr
        assert sup.get(launch.launch_id).status == "ready"  # untouched
    finally:
        sup.stop(launch.launch_id)
        sup.close()


def test_compare_of_stored_runs_while_the_studio_runs(owned, tmp_path: Path) -> None:
    pytest.importorskip("studio_backend.compare.runs", reason="needs the compare package")
    from studio_backend.compare.runs import compare_any
    from studio_backend.dumps.ingest import ingest_dump
    from tests.analysis.dumpdata import write_dump

    a = ingest_dump(owned, write_dump(tmp_path / "a")[0])
    b = ingest_dump(owned, write_dump(tmp_path / "b", seed=1)[0])
    out = studio(owned.root, "compare", a, b, "--json")
    assert out.returncode in (0, 1), out.stderr  # 0: no divergence, 1: diverged
    want = json.loads(json.dumps(compare_any(owned, a, b).as_json(), allow_nan=False))
    assert json.loads(out.stdout) == want
    # a dump folder not ingested yet cannot be ingested from here
    new, _ = write_dump(tmp_path / "c")
    refused = studio(owned.root, "compare", a, str(new))
    assert refused.returncode == 2 and "not ingested" in refused.stderr
    assert "Traceback" not in refused.stderr
