"""Spawned children must not re-run a page script that Streamlit installed as __main__."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from studio_backend.procs import (
    SafeProcessPool,
    clean_main_for_spawn,
    process_alive,
    process_start,
    stop_signals,
)


def _fake_page(tmp_path: Path) -> tuple[types.ModuleType, Path]:
    marker = tmp_path / "page-ran"
    page = tmp_path / "page.py"
    page.write_text(f"open({str(marker)!r}, 'a').write('ran\\n')\n")
    module = types.ModuleType("__main__")
    module.__file__ = str(page)
    return module, marker


def _spawn_once() -> int:
    proc = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join(60)
    return proc.exitcode


@pytest.mark.parametrize("guarded", [False, True])
def test_spawned_child_and_borrowed_main(tmp_path: Path, monkeypatch, guarded: bool) -> None:
    module, marker = _fake_page(tmp_path)
    monkeypatch.setitem(sys.modules, "__main__", module)
    if guarded:
        with clean_main_for_spawn():
            assert _spawn_once() == 0
        assert sys.modules["__main__"] is module  # restored afterwards
        assert not marker.exists()
    else:  # the hazard the guard exists for: the child executes the page script
        assert _spawn_once() == 0
        assert marker.read_text() == "ran\n"


@pytest.mark.parametrize("always", [False, True])
def test_entry_script_main_hidden_only_when_asked(tmp_path: Path, monkeypatch, always) -> None:
    """A genuine entry script stays importable in children unless ``always`` hides it too
    (worker pools whose target lives in a package module: studio_backend/dsa/ingest.py)."""
    module, marker = _fake_page(tmp_path)
    monkeypatch.setitem(sys.modules, "__main__", module)
    monkeypatch.setattr(sys, "argv", [module.__file__])  # the entry script, not a borrowed page
    with clean_main_for_spawn(always=always):
        assert _spawn_once() == 0
    assert sys.modules["__main__"] is module
    assert marker.exists() is not always  # the child re-ran the script unless hidden


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pool_workers_do_not_run_a_borrowed_main(tmp_path: Path, monkeypatch, method) -> None:
    """Workers start on submit, possibly long after the pool was made (CI saw a stats worker
    re-run the Sparse attention page an AppTest had left as __main__ and die)."""
    module, marker = _fake_page(tmp_path)
    monkeypatch.setitem(sys.modules, "__main__", module)
    with SafeProcessPool(2, method) as pool:
        assert list(pool.map(abs, [-1, -2, -3])) == [1, 2, 3]
        pids = set(pool.map(_pid, range(8)))
    assert pids and os.getpid() not in pids
    assert sys.modules["__main__"] is module
    assert not marker.exists()


def _pid(_: int) -> int:
    return os.getpid()


def test_overlapping_guards_restore_the_real_main_once(tmp_path: Path, monkeypatch) -> None:
    module, _ = _fake_page(tmp_path)
    monkeypatch.setitem(sys.modules, "__main__", module)
    barrier = threading.Barrier(4)
    seen: list[bool] = []

    def enter_and_leave(delay: float) -> None:
        with clean_main_for_spawn():
            barrier.wait(10)  # all four inside at once
            seen.append(sys.modules["__main__"] is not module)
            time.sleep(delay)

    threads = [threading.Thread(target=enter_and_leave, args=(d,)) for d in (0, 0.01, 0.02, 0.03)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [True] * 4
    assert sys.modules["__main__"] is module


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_pool_workers_exit_when_their_parent_is_killed(tmp_path: Path, method: str) -> None:
    """A CLI killed with -9 leaves no pool worker behind (issue 17: two ~350 MB workers lived on)."""
    import signal
    import subprocess

    pids = tmp_path / "pids"
    prog = (
        "import os, sys, time\n"
        "from studio_backend.procs import SafeProcessPool\n"
        f"pool = SafeProcessPool(2, {method!r}, always=True)\n"
        "ws = {pool.submit(os.getpid).result(timeout=120) for _ in range(8)}\n"
        f"open({str(pids)!r}, 'w').write(' '.join(map(str, ws)))\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", prog])
    deadline = time.time() + 120
    while not (pids.exists() and pids.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    workers = [int(p) for p in pids.read_text().split()]
    assert workers
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.time() + 10
    while any(alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    assert not [w for w in workers if alive(w)]


def test_terminate_ends_busy_workers_without_waiting_for_their_work() -> None:
    pool = SafeProcessPool(2, "spawn", always=True)
    busy = [pool.submit(time.sleep, 120) for _ in range(2)]
    queued = pool.submit(time.sleep, 120)
    while not all(f.running() for f in busy):
        time.sleep(0.05)
    procs = list(pool._processes.values())
    starts = {p.pid: process_start(p.pid) for p in procs}
    assert len(procs) == 2 and all(process_alive(p.pid, starts[p.pid]) for p in procs)
    t0 = time.monotonic()
    pool.terminate()
    assert time.monotonic() - t0 < 30  # not the 120 s of the sleeping jobs
    # by PID, not is_alive(): an earlier test in this process may leave children auto-reaped
    assert not any(process_alive(p.pid, starts[p.pid]) for p in procs)
    # the running jobs fail (pool broken) instead of finishing later; nothing else runs
    from concurrent.futures import wait

    done, _ = wait(busy, timeout=30)
    assert len(done) == 2 and all(f.exception() is not None for f in done)
    assert not queued.done() or queued.cancelled() or queued.exception() is not None


def test_stop_signals_sets_a_flag_then_gives_the_handlers_back() -> None:
    """SIGTERM / SIGINT inside set the flag (no exception); after, every handler (SIGCHLD too)
    is the one from before, also when the block raises."""
    import signal

    sigs = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)
    before = {s: signal.getsignal(s) for s in sigs}
    stopped: list[int] = []
    with stop_signals(lambda: stopped.append(1)):
        assert signal.getsignal(signal.SIGTERM) not in (before[signal.SIGTERM], signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while len(stopped) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # handlers run in the main thread between bytecodes
    assert stopped == [1, 1]
    assert {s: signal.getsignal(s) for s in sigs} == before
    with pytest.raises(RuntimeError), stop_signals(lambda: None):
        raise RuntimeError("boom")
    assert {s: signal.getsignal(s) for s in sigs} == before
