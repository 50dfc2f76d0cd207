"""Workspace faults and Ctrl-C: one clear line, a documented exit code, nothing lost (issue 17).

Each case runs the real CLI in a subprocess, as a user would, and asserts the line, the code and
that no traceback reached the terminal. Exit codes: studio_backend/workspace/faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from studio_backend.dumps import synthetic as S
from studio_backend.procs import process_start

REPO = Path(__file__).resolve().parents[2]


def studio(ws: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "STUDIO_WORKSPACE": str(ws)}
    return subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )


def assert_clear(out: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    for w in words:
        assert w in out.stderr, out.stderr


def small_dump(tmp: Path, tp: int = 2, tokens=(5, 2)) -> Path:
    cfg = S.SynthConfig()
    truth = S.make_truth(cfg, list(tokens), seed=0)
    return S.write_msit(tmp / f"dump_tp{tp}", cfg, truth, tp)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A workspace holding one ingested run (copied by the cases that damage it)."""
    tmp = tmp_path_factory.mktemp("ingested")
    ws = tmp / "ws"
    out = studio(ws, "ingest", str(small_dump(tmp)))
    assert out.returncode == 0, out.stderr
    return ws


def _copy(src: Path, dst: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
    return dst


@pytest.mark.parametrize("damage", ["empty", "junk", "truncated", "directory"])
def test_corrupt_database_is_one_clear_line(ingested: Path, tmp_path: Path, damage: str) -> None:
    ws = _copy(ingested, tmp_path / "ws")
    db = ws / "studio.duckdb"
    data = db.read_bytes()
    db.unlink()
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "junk":
        db.write_bytes(b"not a database\n" * 500)
    elif damage == "truncated":
        db.write_bytes(data[: len(data) // 3])
    else:
        db.mkdir()
    for cmd in (["info"], ["ingest", str(small_dump(tmp_path))]):
        out = studio(ws, *cmd)
        assert_clear(out, 3, str(db), "Move it aside")
    if damage != "directory":
        assert db.read_bytes() == (b"" if damage == "empty" else db.read_bytes())  # untouched


def test_stale_owner_with_a_reused_pid_does_not_lock_the_workspace(ingested, tmp_path) -> None:
    ws = _copy(ingested, tmp_path / "ws")
    # PID 1 is alive, but it is not the studio that wrote this owner.json (other start time).
    (ws / "owner.json").write_text(json.dumps({"pid": 1, "pid_start": "12345678", "url": None}))
    assert_clear(studio(ws, "info"), 0)


def test_live_owner_still_refuses_writers(ingested, tmp_path) -> None:
    ws = _copy(ingested, tmp_path / "ws")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        record = {"pid": holder.pid, "pid_start": process_start(holder.pid), "url": "http://x"}
        (ws / "owner.json").write_text(json.dumps(record))
        assert_clear(studio(ws, "ingest", str(small_dump(tmp_path))), 2, "in use by the studio")
    finally:
        holder.kill()
        holder.wait()


def test_missing_tensor_store_then_render(ingested, tmp_path) -> None:
    ws = _copy(ingested, tmp_path / "ws")
    run = (
        duckdb.connect(str(ws / "studio.duckdb"))
        .execute("SELECT run_id FROM dump_runs")
        .fetchone()[0]
    )
    subprocess.run(["rm", "-rf", str(ws / "tensors")], check=True)
    out = studio(
        ws,
        "render",
        run,
        "--layer-pattern",
        r"layers\.0\.",
        "--out",
        str(tmp_path / "o"),
        "--workers",
        "1",
    )
    assert_clear(out, 3, "tensor file is missing", "studio ingest")


@pytest.fixture(scope="module")
def big_dump(tmp_path_factory) -> Path:
    """A dump whose ingest takes seconds (5.7 MB; its workspace needs ~7 MB)."""
    return small_dump(tmp_path_factory.mktemp("big"), tokens=(2000, 2))


def interrupted(ws: Path, args: list[str], after_s: float) -> tuple[subprocess.Popen, str, str]:
    """Run ``studio ARGS`` and send it SIGINT ``after_s`` seconds after its database appears."""
    env = {**os.environ, "STUDIO_WORKSPACE": str(ws)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio_backend.cli", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (ws / "studio.duckdb").exists():
        time.sleep(0.05)
    time.sleep(after_s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc, out, err


def test_ctrl_c_during_ingest_exits_130_and_keeps_committed_rows(tmp_path, big_dump) -> None:
    ws = tmp_path / "ws"
    proc, out, err = interrupted(ws, ["ingest", str(big_dump)], 0.5)
    if proc.returncode == 0 or (proc.returncode == -signal.SIGINT and "ingest error(s)" in out):
        # finished before the interrupt arrived, or it arrived while the interpreter was exiting
        pytest.skip("the ingest finished before the interrupt arrived (a very fast machine)")
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "interrupted" in err
    again = studio(ws, "ingest", str(big_dump))  # resumes, nothing duplicated
    assert again.returncode == 0, again.stderr
    con = duckdb.connect(str(ws / "studio.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM dump_runs").fetchone()[0] == 1
    files = con.execute(
        "SELECT count(*), count(DISTINCT relpath) FROM dump_ingest_files"
    ).fetchone()
    assert files[0] == files[1] > 0


def test_ctrl_c_in_watch_mode_finishes_and_exits_0(tmp_path) -> None:
    """In --watch, Ctrl-C is how a user ends watching: what arrived is finished, exit 0."""
    ws = tmp_path / "ws"
    proc, out, err = interrupted(ws, ["ingest", "--watch", str(small_dump(tmp_path))], 3)
    assert proc.returncode == 0 and "Traceback" not in err, (out, err)
    assert "0 ingest error(s)" in out


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    ok = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )
    return ok


@pytest.fixture
def mounts():
    made: list[Path] = []
    yield made
    for m in reversed(made):
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_read_only_workspace(ingested, tmp_path, mounts) -> None:
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "64m"):
        pytest.skip("cannot mount a tmpfs here (not root or no mount permission)")
    mounts.append(mnt)
    ws = _copy(ingested, mnt / "ws")
    assert subprocess.run(["mount", "-o", "remount,ro", str(mnt)]).returncode == 0
    info = studio(ws, "info")
    assert_clear(info, 0)
    assert "dump_runs" in info.stdout
    out = studio(ws, "ingest", str(small_dump(tmp_path)))
    assert_clear(out, 3, "cannot write there", "--workspace DIR")


def test_disk_full_during_ingest(tmp_path, mounts, big_dump) -> None:
    mnt = tmp_path / "full"
    if not _mount_tmpfs(mnt, "1m"):
        pytest.skip("cannot mount a tmpfs here (not root or no mount permission)")
    mounts.append(mnt)
    out = studio(mnt / "ws", "ingest", str(big_dump))
    assert_clear(out, 3, "disk is full", "rerun")
