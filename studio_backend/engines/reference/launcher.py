"""Start and stop a served reference engine: one process per rank, children of the caller.

SIGTERM to the launcher (``studio serve-reference``) stops rank 0, which tells the other ranks
to stop through the process group; stragglers are terminated, then killed. Rank processes also
ask the kernel to SIGTERM them if the launcher dies (PR_SET_PDEATHSIG), so none are orphaned.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from studio_backend.engines.reference import parallel
from studio_backend.engines.reference.dumping import DumpOptions
from studio_backend.engines.reference.layout import resolve_layout
from studio_backend.errors import InputError, StudioError
from studio_backend.models.config import read_config
from studio_backend.procs import clean_main_for_spawn

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the launcher's own cleanup still applies
        pass


def _rank_main(
    rank: int,
    tp: int,
    pg_port: int,
    model_dir: str,
    host: str,
    port: int,
    dump: DumpOptions | None,
    ready: mp.synchronize.Event,
    dump_root_box: mp.Queue,
    layout: str | None = None,
) -> None:
    _die_with_parent()
    stopping = threading.Event()
    if rank == 0:
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the launcher decides; rank 0 relays
    torch.set_num_threads(1)
    parallel.init_group(rank, tp, pg_port)
    try:
        from studio_backend.engines.reference.runner import ModelRunner

        kron = bool(dump and (dump.kronecker or "npu_kronecker_quant" in dump.api_list))
        runner = ModelRunner(model_dir, kronecker_observe=kron, layout=layout)
        runner.warm_up()
        if dump is not None:
            from studio_backend.engines.reference.dumping import install

            root = install(runner, dump, rank)
            if rank == 0:
                dump_root_box.put(str(root))
        if rank == 0:
            from studio_backend.engines.reference.server import serve_rank0

            serve_rank0(runner, Path(model_dir), host, port, ready, stopping)
        else:
            from studio_backend.engines.reference.server import follow

            follow(runner)
    finally:
        parallel.destroy()


@dataclass
class ServerHandle:
    """A running server: its URL, rank processes and (with dumps) the dump root."""

    url: str
    procs: list[mp.process.BaseProcess]
    ready: mp.synchronize.Event
    dump_root_box: mp.Queue
    dump_root: Path | None = None
    expects_dump: bool = False

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            dead = [i for i, p in enumerate(self.procs) if not p.is_alive()]
            if dead:
                self.stop()
                raise StudioError(f"reference engine rank(s) {dead} exited during start-up")
            if time.monotonic() > deadline:
                self.stop()
                raise StudioError(f"reference engine not ready after {timeout:.0f} s")
        if self.expects_dump:
            # Rank 0 put the root before it became ready, but a Queue's put is flushed by a
            # feeder thread: empty() may still say True here, so wait for it.
            try:
                self.dump_root = Path(self.dump_root_box.get(timeout=30))
            except queue.Empty as exc:
                self.stop()
                raise StudioError("the reference engine did not report its dump root") from exc

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def health(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:  # noqa: S310
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """Rank 0 first (it stops the others), then terminate, then kill what remains."""
        if self.procs and self.procs[0].is_alive():
            os.kill(self.procs[0].pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(3)
            if p.is_alive():
                p.kill()
                p.join(3)


def start_server(
    model_dir: str | Path,
    tp: int = 1,
    port: int = 8000,
    host: str = "127.0.0.1",
    dump: DumpOptions | None = None,
    layout: str | None = None,
) -> ServerHandle:
    """Spawn the rank processes; call ``wait_ready()`` before sending requests. ``layout``:
    the module layout (model.py ``LAYOUTS``; default ``$STUDIO_REFERENCE_LAYOUT`` or vllm)."""
    model_dir = Path(model_dir).expanduser().resolve()
    layout = resolve_layout(layout)
    cfg = read_config(model_dir)
    if tp < 1 or cfg.num_attention_heads % tp:
        raise InputError(tp, f"--tp must divide num_attention_heads={cfg.num_attention_heads}")
    if dump is not None:
        dump.check()
        dump.dump_path = str(Path(dump.dump_path).expanduser().resolve())
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    box = ctx.Queue()
    pg_port = parallel.free_port()
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(r, tp, pg_port, str(model_dir), host, port, dump, ready, box, layout),
            name=f"reference-rank{r}",
        )
        for r in range(tp)
    ]
    with clean_main_for_spawn():
        for p in procs:
            p.start()
    return ServerHandle(f"http://{host}:{port}", procs, ready, box, expects_dump=dump is not None)
