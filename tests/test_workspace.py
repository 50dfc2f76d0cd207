from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from studio_backend.errors import WorkspaceBusyError
from studio_backend.workspace import open_workspace
from studio_backend.workspace.migrate import available

REPO = Path(__file__).resolve().parent.parent


def test_migrations_apply_once(workspace_dir: Path) -> None:
    versions = [m.version for m in available()]
    assert versions == sorted(set(versions)) and versions[0] == 1
    ws = open_workspace(workspace_dir)
    assert ws.schema_version() == versions[-1]
    ws.close()
    ws = open_workspace(workspace_dir)  # reopening applies nothing twice
    rows = ws.cursor().execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == versions
    ws.close()


def test_table_counts_and_activity(workspace) -> None:
    for i in range(3):
        workspace.log("test", f"event {i}")
    assert workspace.table_counts()["activity"] == 3
    assert [m for _, _, m in workspace.recent_activity(2)] == ["event 2", "event 1"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int64])
def test_tensor_store_round_trip(workspace, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    t = (torch.randn(7, 5, generator=gen) * 100).to(dtype)
    workspace.tensors.put("run1/step0/layers.0.mlp", {"output": t}, {"rule": "test"})
    back = workspace.tensors.get("run1/step0/layers.0.mlp", "output")
    assert back.dtype == dtype and torch.equal(back, t)
    with pytest.raises(ValueError):
        workspace.tensors.path("../escape")


_HOLDER = """
import sys, time
from studio_backend.workspace import open_workspace
ws = open_workspace(sys.argv[1], owner=sys.argv[2] == "owner", url="http://127.0.0.1:8599")
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["owner", "plain"])
def test_cli_refuses_held_workspace(tmp_path: Path, mode: str) -> None:
    ws_dir = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(ws_dir), mode],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        start = time.monotonic()
        out = subprocess.run(
            # A writing command: reading ones are answered by the owner (test_read_service.py).
            [sys.executable, "-m", "studio_backend.cli", "--workspace", str(ws_dir), "ingest",
             str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert time.monotonic() - start < 30
        assert out.returncode == 2
        assert f"workspace {ws_dir} is in use by" in out.stderr
        assert "Traceback" not in out.stderr
        if mode == "owner":
            assert f"the studio (PID {holder.pid}, http://127.0.0.1:8599)" in out.stderr
        with pytest.raises(WorkspaceBusyError):
            open_workspace(ws_dir)
    finally:
        holder.kill()
        holder.wait()
    # once the holder is gone, a stale owner.json does not block anyone
    ws = open_workspace(ws_dir)
    assert ws.schema_version() >= 1
    ws.close()
    assert not (mode == "owner" and os.getpid() == holder.pid)
