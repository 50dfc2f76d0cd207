"""The supervisor with real processes: readiness, crash report, stop, re-attach after restart."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from studio_backend.errors import InputError
from studio_backend.launch import procs
from studio_backend.launch.spec import LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from tests.launch.conftest import free_port, standin


def _spec(model_dir: Path, port: int) -> LaunchSpec:
    return LaunchSpec("reference", str(model_dir), tp=1, port=port)


def _worker_pid(log: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = re.search(r"worker pid (\d+)", log.read_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError(log.read_text())


def test_ready_then_stop_leaves_nothing(workspace, model_dir: Path) -> None:
    sup = Supervisor(workspace, poll_s=0.1)
    port = free_port()
    launch = sup.start(
        _spec(model_dir, port), command=standin(port, "--ready-after", "1.0", "--spawn-worker")
    )
    assert launch.status == "starting"
    assert os.getpgid(launch.pid) == launch.pid == launch.pgid  # its own process group
    assert launch.pgid != os.getpgid(0)
    worker = _worker_pid(Path(launch.log_path))
    assert procs.pgid_of(worker) == launch.pgid
    ready = sup.wait_status(launch.launch_id, ("ready",), 30)
    assert ready.status == "ready" and ready.ready_at is not None
    assert any("stand-in serving on" in line for line in sup.log_tail(launch.launch_id))
    stopped = sup.stop(launch.launch_id, grace_s=10)
    assert stopped.status == "stopped"
    assert stopped.exit_code == -signal.SIGTERM
    assert procs.group_members(launch.pgid) == []
    assert not procs.alive(worker)
    kinds = [m for _, k, m in workspace.recent_activity() if k == "launch"]
    assert any(f"{launch.launch_id} is ready" in m for m in kinds)
    sup.close()


def test_crash_reports_exit_code_and_last_lines(workspace, model_dir: Path) -> None:
    sup = Supervisor(workspace, poll_s=0.1)
    port = free_port()
    launch = sup.start(
        _spec(model_dir, port), command=standin(port, "--crash-after", "0.5", "--exit-code", "7")
    )
    done = sup.wait_status(launch.launch_id, ("crashed",), 30)
    assert done.status == "crashed"
    assert done.exit_code == 7
    assert "exit code 7" in done.message
    assert "fatal: simulated failure in the model runner" in done.message
    assert done.ended_at is not None
    sup.close()


def test_sigterm_ignored_escalates_to_sigkill(workspace, model_dir: Path) -> None:
    sup = Supervisor(workspace, poll_s=0.1)
    port = free_port()
    launch = sup.start(_spec(model_dir, port), command=standin(port, "--ignore-sigterm"))
    sup.wait_status(launch.launch_id, ("ready",), 30)
    t0 = time.monotonic()
    stopped = sup.stop(launch.launch_id, grace_s=1.0)
    assert stopped.status == "stopped"
    assert stopped.exit_code == -signal.SIGKILL
    assert time.monotonic() - t0 < 10
    assert "ignoring SIGTERM" in "\n".join(sup.log_tail(launch.launch_id))
    assert procs.group_members(launch.pgid) == []
    sup.close()


def test_reattach_after_restart_and_mark_dead(workspace, model_dir: Path) -> None:
    first = Supervisor(workspace, poll_s=0.1)
    p1, p2 = free_port(), free_port()
    alive = first.start(_spec(model_dir, p1), command=standin(p1))
    dead = first.start(_spec(model_dir, p2), command=standin(p2))
    first.wait_status(alive.launch_id, ("ready",), 30)
    first.wait_status(dead.launch_id, ("ready",), 30)
    first.close()  # the studio goes away; its servers keep running
    os.killpg(dead.pgid, signal.SIGKILL)  # one of them dies while nobody watches
    deadline = time.monotonic() + 10
    while procs.alive(dead.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    second = Supervisor(workspace, poll_s=0.1)  # re-attaches on creation
    assert second.get(dead.launch_id).status == "lost"
    assert "exit code unknown" in second.get(dead.launch_id).message
    assert second.get(alive.launch_id).status == "ready"
    assert alive.launch_id in second._threads
    stopped = second.stop(alive.launch_id, grace_s=5)
    assert stopped.status == "stopped"
    assert procs.group_members(alive.pgid) == []
    assert not procs.alive(alive.pid)
    second.close()
    first._children[alive.launch_id].wait(5)  # reap in the test process (its real parent)


def test_port_conflicts_rejected(workspace, model_dir: Path) -> None:
    sup = Supervisor(workspace, poll_s=0.1)
    port = free_port()
    launch = sup.start(_spec(model_dir, port), command=standin(port))
    sup.wait_status(launch.launch_id, ("ready",), 30)
    with pytest.raises(InputError, match=f"used by launch {launch.launch_id}"):
        sup.start(_spec(model_dir, port), command=standin(port))
    sup.stop(launch.launch_id)
    sup.close()


def test_missing_executable_is_clear(workspace, model_dir: Path) -> None:
    from studio_backend.errors import StudioError
    from studio_backend.launch.commands import Command

    sup = Supervisor(workspace, poll_s=0.1)
    with pytest.raises(StudioError, match="not found"):
        sup.start(
            _spec(model_dir, free_port()), command=Command(argv=["/nonexistent/vllm", "serve"])
        )
    assert sup.list() == []


def test_msprobe_needs_empty_dump_folder(workspace, model_dir: Path, tmp_path: Path) -> None:
    from studio_backend.launch.spec import DumpSettings

    dump = tmp_path / "probe"
    (dump / "step0").mkdir(parents=True)
    spec = LaunchSpec("reference", str(model_dir), port=free_port(),
                      dump=DumpSettings(tool="msprobe", dump_path=str(dump)))  # fmt: skip
    with pytest.raises(InputError, match="msprobe needs an empty dump folder"):
        Supervisor(workspace).start(spec, command=standin(spec.port))


def test_stop_of_reference_engine_tp2_is_clean(workspace, tmp_path: Path) -> None:
    """A stop from the studio shuts the real reference engine down in its own order: the
    launcher's leader gets SIGTERM first and stops rank 0, which stops rank 1 over gloo. The
    log ends with the studio's two notes, with no traceback (a SIGTERM to the whole group
    killed rank 1 under rank 0's stop message: gloo "Connection closed by peer")."""
    from studio_backend.models.create import create_model

    model = create_model(tmp_path / "tiny", preset="tiny", seed=0)
    sup = Supervisor(workspace, poll_s=0.1)
    port = free_port()
    launch = sup.start(LaunchSpec("reference", str(model), tp=2, port=port))
    assert sup.wait_status(launch.launch_id, ("ready",), 240).status == "ready"
    assert len(procs.group_members(launch.pgid)) >= 3  # launcher + 2 ranks (+ spawn helper)
    stopped = sup.stop(launch.launch_id)
    assert (stopped.status, stopped.exit_code) == ("stopped", 0)  # it exited by itself
    assert procs.group_members(launch.pgid) == []
    log = Path(launch.log_path).read_text()
    assert "Traceback" not in log and "Connection closed by peer" not in log
    notes = [line for line in log.splitlines() if line.startswith("--- studio: ")]
    assert [re.sub(r"\d\d:\d\d:\d\d ", "", n) for n in notes] == [
        f"--- studio: stop requested: SIGTERM to the server (PID {launch.pid}) ---",
        "--- studio: stopped (exit code 0) ---",
    ]
    assert log.rstrip().splitlines()[-1] == notes[-1]  # nothing after the stop
    sup.close()


def test_shutdown_part_is_what_follows_the_studio_stop_note() -> None:
    from studio_backend.launch.logtail import shutdown_part

    lines = [
        "serving",
        "--- studio: 10:00:00 stop requested: SIGTERM to the server (PID 7) ---",
        "Traceback (most recent call last):",
        "RuntimeError: Connection closed by peer",
        "--- studio: 10:00:01 stopped (exit code 1) ---",
    ]
    assert shutdown_part(lines) == lines[2:]
    assert shutdown_part(lines[:1] + lines[2:]) == []  # no stop from the studio: no shutdown
