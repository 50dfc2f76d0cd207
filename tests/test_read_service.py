"""Reading commands work while the studio owns the workspace (issue 18 item 6)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from backend.errors import StudioError
from backend.workspace import open_workspace
from backend.workspace.read_service import query

REPO = Path(__file__).resolve().parent.parent


def studio(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "--workspace", str(ws), *args],
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

    from backend.moe.cli import describe, import_source

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
