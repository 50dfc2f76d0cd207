"""Starting child processes safely from inside the studio.

Streamlit runs each page as a fresh module installed as ``sys.modules['__main__']`` with the
page's ``__file__``. A ``spawn``/``forkserver`` child re-executes the parent's ``__main__`` from
that path before running its target, so a process pool or engine rank started from a page (or
from a test that ran a page through AppTest) would re-run the page script in the child. Wrapping
the process starts in :func:`clean_main_for_spawn` hides such a borrowed ``__main__``; a genuine
entry script (``python bench/x.py``) is left alone so its own functions stay importable.
:class:`SafeProcessPool` applies it to every worker start of a pool (they start on submit).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Several threads may start processes at once (stitch workers, page sessions): the swap is
# reference-counted so the real __main__ is restored exactly once, by the last one out.
_LOCK = threading.Lock()
_saved: tuple[types.ModuleType, types.ModuleType] | None = None  # (real, stub) while hidden
_depth = 0


def _borrowed_main(module: types.ModuleType | None) -> bool:
    path = getattr(module, "__file__", None)
    if module is None or path is None or getattr(module, "__spec__", None) is not None:
        return False
    entry = sys.argv[0] if sys.argv else ""
    return os.path.abspath(path) != os.path.abspath(entry)


@contextmanager
def clean_main_for_spawn(*, always: bool = False) -> Iterator[None]:
    """While active, spawned children do not re-run a ``__main__`` borrowed by Streamlit.

    ``always``: hide any ``__main__``, an entry script's too (for workers whose target lives in
    a package module: they then skip importing the entry script and everything it imports).
    """
    global _depth, _saved
    with _LOCK:
        main = sys.modules.get("__main__")
        hide = _depth > 0 or (main is not None and (always or _borrowed_main(main)))
        if hide and _depth == 0:
            _saved = (main, types.ModuleType("__main__"))
            sys.modules["__main__"] = _saved[1]
        _depth += hide
    try:
        yield
    finally:
        if hide:
            with _LOCK:
                _depth -= 1
                if _depth == 0 and _saved is not None:
                    main, stub = _saved
                    _saved = None
                    if sys.modules.get("__main__") is stub:  # not replaced by a newer page run
                        sys.modules["__main__"] = main


@contextmanager
def stop_signals(on_stop: Callable[[], None]) -> Iterator[None]:
    """While active, SIGTERM and SIGINT call ``on_stop`` (set a flag; never raise); on exit the
    previous handlers are back. Signal handlers belong to the whole process: a CLI command run
    in-process (tests, a page) must leave them as it found them (main thread only, as
    ``signal.signal`` itself)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for s in saved:
            signal.signal(s, lambda *_: on_stop())
        yield
    finally:
        for s, handler in saved.items():  # None: set outside Python, restored as the default
            signal.signal(s, signal.SIG_DFL if handler is None else handler)


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None if unknown.

    A PID plus its start time names one process for good: PIDs are reused, start times are not.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the comm field


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` (started at ``start``, when given) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = process_start(pid)
    return start is None or now is None or now == start


def _exit_when_gone(pid: int, start: str | None, period_s: float) -> None:
    while True:
        time.sleep(period_s)
        if not process_alive(pid, start):
            os._exit(1)


def die_with_parent(owner: int | None = None, period_s: float = 0.5) -> None:
    """In a child process: exit as soon as ``owner`` (default: the parent) is gone, kill -9 included.

    A watcher thread polls the owner; unlike PR_SET_PDEATHSIG it does not depend on which thread
    started the child. Pools pass the studio's PID: a ``forkserver`` worker's parent is the fork
    server, which lives on as long as any worker does.
    """
    pid = owner if owner is not None else os.getppid()
    threading.Thread(
        target=_exit_when_gone, args=(pid, process_start(pid), period_s), daemon=True
    ).start()


class SafeProcessPool(ProcessPoolExecutor):
    """A process pool whose workers never re-run a borrowed ``__main__`` and never outlive it.

    ``method``: the start method (``spawn`` or ``forkserver``; never ``fork``, which would copy
    DuckDB handles and threads). ``always`` as in :func:`clean_main_for_spawn`. Workers exit when
    their parent dies (:func:`die_with_parent`; with ``forkserver`` the parent is the fork server,
    which outlives the studio otherwise).
    """

    def __init__(self, max_workers: int, method: str = "spawn", *, always: bool = False) -> None:
        self._hide_always = always
        super().__init__(
            max_workers=max_workers,
            mp_context=mp.get_context(method),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        # Workers (and the forkserver itself) are started lazily by submit.
        with clean_main_for_spawn(always=self._hide_always):
            return super().submit(fn, *args, **kwargs)

    def terminate(self) -> None:
        """Stop now: pending work is cancelled and this pool's own workers are ended by their
        PIDs (SIGTERM) instead of being waited for (a failed command does not sit out a
        worker's warm-up)."""
        procs = list((getattr(self, "_processes", None) or {}).values())
        # PID + start time, not Process.is_alive(): when another thread reaps the worker first
        # (this executor's manager thread joins its workers once the pool breaks or shuts
        # down; also SIGCHLD ignored, a waitpid(-1)), is_alive() reads the dead worker as alive.
        starts = {p.pid: process_start(p.pid) for p in procs if p.pid}
        self.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if process_alive(p.pid, starts.get(p.pid)):
                p.terminate()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            process_alive(p.pid, starts.get(p.pid)) for p in procs
        ):
            time.sleep(0.02)
            for p in procs:
                p.join(0)  # reap it when it is ours to reap
        for p in procs:  # a worker that did not end on SIGTERM in 5 s (a loaded box): SIGKILL
            if process_alive(p.pid, starts.get(p.pid)):
                p.kill()
                p.join(5)
