"""Streaming ingest: watch a dump folder while the server writes it.

A watchdog observer reports created/modified files; a file is taken once its size has been
stable for ``stable_s`` and it loads (a file that fails to load while still fresh is retried).
A periodic rescan catches anything the observer missed, and resumes a run after a restart:
files already recorded under the same content key are skipped. Rank tensors are stitched as
soon as every rank's file is in, and statistics follow in their own thread, so tensors are
viewable before their statistics are done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from studio_backend.dumps.detect import detect
from studio_backend.dumps.ingest import Ingestor, Progress
from studio_backend.dumps.launch_record import launch_tp_for
from studio_backend.errors import InputError
from studio_backend.paths import existing_dir
from studio_backend.workspace import Workspace

log = logging.getLogger(__name__)


# Only events that can change a file's content. Opened / closed-without-write / attrib events
# also fire for the ingest's OWN reads: taking them re-queued every file it had just read
# (issue 17: `--watch --idle-exit 5` on a finished 960-file dump ran 189 s).
WRITE_EVENTS = frozenset(
    {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_CLOSED}
)


class _Handler(FileSystemEventHandler):
    def __init__(self, seen: Callable[[Path], None]) -> None:
        self.seen = seen

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in WRITE_EVENTS:
            return
        path = getattr(event, "dest_path", None) or event.src_path
        name = str(path)
        if name.endswith((".pt", ".pth", "statistics.csv", "dump.json", "model_tree.json")):
            self.seen(Path(name))


class DumpWatcher:
    """Ingest a dump folder continuously until ``stop()``; safe to restart at any time."""

    def __init__(
        self,
        ws: Workspace,
        path: str | Path,
        name: str | None = None,
        *,
        model_config: dict | None = None,
        stable_s: float = 0.2,
        poll_s: float = 0.1,
        rescan_s: float = 2.0,
        workers: int = 2,
        with_stats: bool = True,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.ws = ws
        self.path = existing_dir(path, "dump folder")
        self.name = name
        self.model_config = model_config
        self.stable_s, self.poll_s, self.rescan_s = stable_s, poll_s, rescan_s
        self.workers = workers
        self.with_stats = with_stats
        self.on_progress = on_progress
        self.ingestor: Ingestor | None = None
        self.error: str | None = None
        self._candidates: dict[
            Path, tuple[int, float]
        ] = {}  # path -> (size, time size last changed)
        self._cand_lock = threading.Lock()
        self._taken: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) when ingested
        self._stop = threading.Event()
        self._stats_wake = threading.Event()
        self._observer = Observer()
        self._observer.schedule(_Handler(self._seen), str(self.path), recursive=True)
        self._thread = threading.Thread(
            target=self._loop, name=f"ingest:{self.path.name}", daemon=True
        )
        self._stats_thread = threading.Thread(
            target=self._stats_loop, name="ingest-stats", daemon=True
        )

    # -- public --------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        return self.ingestor.run_id if self.ingestor else None

    @property
    def progress(self) -> Progress | None:
        return self.ingestor.progress if self.ingestor else None

    def start(self) -> DumpWatcher:
        self._observer.start()
        self._thread.start()
        if self.with_stats:
            self._stats_thread.start()
        return self

    def stop(self, finish: bool = True, timeout: float = 120.0) -> None:
        """Stop watching; with ``finish`` ingest what is left and close the run as done."""
        self._stop.set()
        self._observer.stop()
        self._observer.join(timeout)
        self._thread.join(timeout)
        self._stats_wake.set()
        if self._stats_thread.is_alive():
            self._stats_thread.join(timeout)
        if finish and self._attach():
            assert self.ingestor is not None
            self.ingestor.ingest_paths(self.ingestor.layout.tensor_files())
            self.ingestor.ingest_tool_stats()
            self.ingestor.stitch_ready(final=True)
            if self.with_stats:
                self.ingestor.compute_stats()
            self.ingestor.finish("done")

    def idle(self) -> bool:
        """Nothing waiting: no candidate files and no unstitched complete tensors."""
        with self._cand_lock:
            return not self._candidates

    # -- internals -----------------------------------------------------------------------
    def _seen(self, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        size = st.st_size
        now = time.monotonic()
        with self._cand_lock:
            if self._taken.get(path) == (size, st.st_mtime_ns):
                return  # unchanged since it was taken: an event of no consequence
            old = self._candidates.get(path)
            if old is None or old[0] != size:
                self._candidates[path] = (size, now)

    def _attach(self) -> bool:
        """Create the ingestor once the dump's layout exists (the folder may start empty)."""
        if self.ingestor is not None:
            return True
        try:
            layout = detect(self.path, self.model_config, launch_tp_for(self.ws, self.path))
        except InputError:
            return False
        self.ingestor = Ingestor(
            self.ws, layout, self.name, workers=self.workers, on_progress=self.on_progress
        )
        with self.ws.transaction() as cur:
            cur.execute(
                "UPDATE dump_runs SET status = 'watching' WHERE run_id = ?", [self.ingestor.run_id]
            )
        return True

    def _rescan(self) -> None:
        if self.ingestor is None:
            return
        # a rank folder moved in whole fires one folder event, none per file: look for it
        if self.ingestor.layout.refresh():
            with self.ws.transaction() as cur:
                self.ingestor._write_ranks(cur)  # noqa: SLF001 - the ingestor's own writer
        for p in self.ingestor.layout.tensor_files():
            if self.ingestor.is_new(p):
                self._seen(p)

    def _take_stable(self) -> list[Path]:
        now = time.monotonic()
        ready = []
        with self._cand_lock:
            for p, (size, since) in list(self._candidates.items()):
                try:
                    cur = p.stat().st_size
                except OSError:
                    del self._candidates[p]
                    continue
                if cur != size:
                    self._candidates[p] = (cur, now)
                elif now - since >= self.stable_s:
                    ready.append(p)
                    del self._candidates[p]
                    try:
                        st = p.stat()
                        self._taken[p] = (st.st_size, st.st_mtime_ns)
                    except OSError:
                        pass
            if self.ingestor is not None:
                self.ingestor.progress.queue_depth = len(self._candidates)
        return ready

    def _loop(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            try:
                if not self._attach():
                    self._stop.wait(self.poll_s * 5)
                    continue
                assert self.ingestor is not None
                if time.monotonic() - last_scan > self.rescan_s:
                    self._rescan()
                    last_scan = time.monotonic()
                ready = self._take_stable()
                if ready:
                    retry = self.ingestor.ingest_paths(ready, retry_fresh_s=2.0)
                    for p in retry:  # failed to load while still fresh: the writer may not be done
                        with self._cand_lock:
                            self._taken.pop(p, None)
                        self._seen(p)
                    if self.ingestor.stitch_ready(final=False):
                        self._stats_wake.set()
                else:
                    self._stop.wait(self.poll_s)
            except Exception as exc:  # noqa: BLE001 - keep watching; the error is shown in the UI
                log.exception("ingest of %s failed", self.path)
                self.error = f"{type(exc).__name__}: {exc}"
                self._stop.wait(1.0)

    def _stats_loop(self) -> None:
        while not self._stop.is_set():
            self._stats_wake.wait(1.0)
            self._stats_wake.clear()
            if self.ingestor is not None:
                try:
                    # small batches, and only while no new files wait: stitching (viewability)
                    # comes first, statistics use the idle time
                    while not self._stop.is_set():
                        if not self.idle():
                            self._stop.wait(self.poll_s)
                            continue
                        if not self.ingestor.compute_stats(limit=4):
                            break
                except Exception as exc:  # noqa: BLE001
                    log.exception("statistics failed")
                    self.error = f"statistics: {type(exc).__name__}: {exc}"
