"""Ingest a dump into the workspace: catalog rank files, stitch, prove, compute statistics.

The ``Ingestor`` is the single writer; the heavy work per unit (one file, or one tensor across
ranks) is done by pure functions that may run in worker threads or processes. Every file is
recorded once by its content key, so re-running (after a crash or restart) skips what is done
and picks up the rest: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from studio_backend.dumps import expected, revisions
from studio_backend.dumps.detect import DumpLayout, detect
from studio_backend.dumps.launch_record import launch_tp_for
from studio_backend.dumps.pipeline.catalog import (  # noqa: F401 - re-exported: the stage's API
    MAX_MAPPED,
    CatalogEntry,
    CatalogStage,
    catalog_file,
    catalog_members,
)
from studio_backend.dumps.pipeline.discover import HEAD_TAIL, content_key, run_id_for  # noqa: F401
from studio_backend.dumps.pipeline.rows import Progress, RowWriter
from studio_backend.dumps.pipeline.stats_stage import (  # noqa: F401
    StatsStage,
    stats_of,
    stats_of_stored,
    stats_or_problem,
    write_stats,
)
from studio_backend.dumps.pipeline.stitch_stage import (  # noqa: F401
    Location,
    StitchJob,
    StitchStage,
    _no_cyclic_gc,
    _pool,
    _short_gil_switch,
    run_stitch,
    stitch_key,
    stitched_group,
)
from studio_backend.dumps.pipeline.tool_stats import ToolStatsStage
from studio_backend.dumps.pipeline.verify import VerifyStage
from studio_backend.workspace import Workspace


class Ingestor(RowWriter, CatalogStage, StitchStage, VerifyStage, StatsStage, ToolStatsStage):
    """Ingests one dump into one run. Call ``ingest_paths`` repeatedly, then ``finish``."""

    def __init__(
        self,
        ws: Workspace,
        layout: DumpLayout,
        name: str | None = None,
        *,
        workers: int = 2,
        stats_pool: Executor | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        # The imported libraries (torch, pandas, duckdb) leave ~200k long-lived objects that
        # every full cyclic-GC pass scans (~100 ms each, several per GB ingested): freeze them.
        gc.freeze()
        self.ws = ws
        self.layout = layout
        self.run_id = run_id_for(layout.root)
        self.progress = Progress()
        self.workers = max(1, workers)
        self.stats_pool = stats_pool
        self.on_progress = on_progress
        self._lock = threading.RLock()
        self._unknown_noted: set[str] = set()
        self._stats_failed: set[int] = set()  # tensor ids whose statistics failed this session
        self._mapped: dict[str, Any] = {}  # source file -> memory-mapped tensor awaiting stitch
        # ingest_all: rank files per tensor seen so far, and the tensors whose ranks are complete
        self._groups: dict[str, StitchJob] | None = None
        self._complete: list[StitchJob] = []
        self._batched: dict[str, list] | None = None  # ingest_all: rows queued per table
        self._last_flush = time.monotonic()
        old_tp = revisions.stored_tp(ws, self.run_id)
        if old_tp is not None and old_tp != layout.tp_size:  # stitched at another tp: redo
            revisions.reset_stitched(ws, self.run_id)
        self._stitched_tp = layout.tp_size  # the tp every stitch of this run was made at
        self._ensure_run(name)
        cur = ws.cursor()
        self._done = self._load_done()
        self._next_id = int(
            cur.execute("SELECT coalesce(max(tensor_id), 0) + 1 FROM dump_tensors").fetchone()[0]
        )

    def _load_done(self) -> dict[str, str]:
        """relpath -> content key of every file this run has recorded."""
        return dict(
            self.ws.cursor()
            .execute(
                "SELECT relpath, content_key FROM dump_ingest_files WHERE run_id = ?", [self.run_id]
            )
            .fetchall()
        )

    # -- run and ranks -------------------------------------------------------------------
    def _default_name(self) -> str:
        root = self.layout.root
        return root.parent.name if root.name == "torch_tensors" else root.name

    def _ensure_run(self, name: str | None) -> None:
        cfg = json.dumps(self.layout.model_config) if self.layout.model_config else None
        with self.ws.transaction() as cur:
            exists = cur.execute(
                "SELECT 1 FROM dump_runs WHERE run_id = ?", [self.run_id]
            ).fetchone()
            if exists:
                cur.execute(
                    "UPDATE dump_runs SET status = 'ingesting', tp_size = ?, "
                    "model_config = coalesce(?, model_config), name = coalesce(?, name) WHERE run_id = ?",
                    [self.layout.tp_size, cfg, name, self.run_id],
                )
            else:
                cur.execute(
                    "INSERT INTO dump_runs (run_id, name, root, format, tp_size, model_config, status) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'ingesting')",
                    [self.run_id, name or self._default_name(), str(self.layout.root), self.layout.format,
                     self.layout.tp_size, cfg],
                )  # fmt: skip
            self._write_ranks(cur)
            # run-level rows of the side files are re-judged now (a fixed ranks.json clears)
            cur.execute("DELETE FROM dump_ingest_errors WHERE run_id = ? AND kind IN "
                        "('bad_ranks_json', 'bad_config', 'rank_order')", [self.run_id])  # fmt: skip
        if self.layout.rank_order_note:
            self._error(self.layout.root, "rank_order", self.layout.rank_order_note, once=True)
        for path, kind, message in self.layout.extra.get("side_problems", []):
            self._error(path, kind, message, once=True)
        self._note_expected(missing=False)

    def _note_expected(self, missing: bool) -> None:
        """Error rows for a missing rank (against the expected tp) and an unusable config."""
        for problem in expected.config_problems(self.layout.model_config):
            self._error(self.layout.root, "bad_config", f"{problem}; QKV cannot be split by "
                        "heads and the shard widths are not checked", once=True)  # fmt: skip
        if not missing:
            return
        missing = self.layout.missing_ranks
        if not missing:  # a rank that was missing has arrived: its run-level row goes
            with self.ws.transaction() as cur:
                cur.execute("DELETE FROM dump_ingest_errors WHERE run_id = ? AND path = ? AND "
                            "kind = 'missing_rank'", [self.run_id, str(self.layout.root)])  # fmt: skip
        else:
            exp = self.layout.extra.get("expected")
            tp, why = self.layout.tp_size, exp.source if exp else "expected"
            if self.layout.extra.get("rank_source") in ("pids", "device ids (offset)"):
                # the order is the PIDs' (or device ids that are not ranks), so which rank is
                # absent is unknown (rank 0's folder missing would be reported as rank 1)
                what = (f"{len(missing)} of the {tp} ranks of tp={tp} have no folder ({why}); "
                        "which one(s) cannot be told: the rank order comes from process ids "
                        "(add ranks.json)")  # fmt: skip
            else:
                what = f"rank(s) {missing} of tp={tp} have no folder ({why})"
            self._error(self.layout.root, "missing_rank",
                        f"{what}; their shards cannot be stitched", once=True)  # fmt: skip

    def _write_ranks(self, cur) -> None:
        old = dict(cur.execute("SELECT folder, rank FROM dump_ranks WHERE run_id = ?",
                               [self.run_id]).fetchall())  # fmt: skip
        for folder, rank in self.layout.ranks.items():
            if folder in old and old[folder] != rank:  # the order changed: a folder arrived late
                prefix = str(self.layout.folders[folder].path) + "/"
                cur.execute("UPDATE dump_tensors SET rank = ? WHERE run_id = ? AND rank IS NOT "
                            "NULL AND starts_with(source_file, ?)", [rank, self.run_id, prefix])  # fmt: skip
        cur.execute("DELETE FROM dump_ranks WHERE run_id = ?", [self.run_id])
        for folder, rank in sorted(self.layout.ranks.items(), key=lambda kv: kv[1]):
            rf = self.layout.folders[folder]
            cur.execute(
                "INSERT INTO dump_ranks VALUES (?, ?, ?, ?, ?)",
                [self.run_id, rank, folder, rf.device, rf.pid],
            )
        cur.execute(
            "UPDATE dump_runs SET tp_size = ? WHERE run_id = ?", [self.layout.tp_size, self.run_id]
        )

    def ingest_all(
        self, paths: Iterable[Path], batch_files: int = 48, flush_s: float = 1.0
    ) -> None:
        """Catalog and stitch many files, overlapping the two; then stitch what is left.

        Files go in tensor order (step, module, io, rank), so each batch completes tensors.
        The catalog (reading headers: needs the GIL) runs here while worker threads stitch and
        write the tensors completed by earlier batches (memcmp, copies and file writes release
        the GIL), and this thread records their results in the workspace, committed together
        about every ``flush_s`` seconds. After a crash, what was not committed is redone.
        """
        keyed = [(p, self.layout.order_key(p)) for p in paths]
        order = sorted((x for x in keyed if x[1] is not None), key=lambda x: x[1])
        done = {
            k for (k,) in self.ws.cursor().execute(
                "SELECT stitch_key FROM dump_stitch_report WHERE run_id = ?", [self.run_id]
            ).fetchall()
        }  # fmt: skip
        heads, tp = expected.heads_of(self.layout.model_config), self.layout.tp_size
        self._groups, self._complete, self._batched = {}, [], {}
        running: list[Future] = []
        try:
            with _pool(self.workers) as pool, _short_gil_switch(), _no_cyclic_gc():
                for i in range(0, len(order), batch_files):
                    self.ingest_paths([p for p, _ in order[i : i + batch_files]])
                    jobs, self._complete = self._complete, []
                    running += [pool.submit(self._safe_stitch, j, tp, heads)
                                for j in jobs if j.key not in done]  # fmt: skip
                    state = [(f, f.done()) for f in running]  # one look: none slips through
                    finished = [f for f, ready in state if ready]
                    running = [f for f, ready in state if not ready]
                    if finished:
                        self._write_stitched([f.result() for f in finished])
                    if time.monotonic() - self._last_flush > flush_s:
                        self._flush()  # what is stitched so far becomes visible
                if running:
                    self._flush()  # the catalog goes in while the last stitches still run
                    self._write_stitched([f.result() for f in running])
        finally:
            try:
                self._flush()
            except Exception:
                self._batched = None  # the workspace stays the truth about what is done:
                self._done = self._load_done()  # unqueued files are ingested again next time
                raise
            finally:
                self._groups, self._batched = None, None
        self.stitch_ready(final=True)

    def finish(self, status: str = "done") -> None:
        with self.ws.transaction() as cur:
            cur.execute("UPDATE dump_runs SET status = ? WHERE run_id = ?", [status, self.run_id])

    def _notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


def ingest_dump(
    ws: Workspace,
    dump_root: str | Path,
    name: str | None = None,
    *,
    model_config: dict[str, Any] | None = None,
    with_stats: bool = True,
    workers: int = 2,
    stats_workers: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    launch_tp: tuple[int, str] | None = None,
) -> str:
    """Ingest a whole dump (blocking): catalog, stitch, verify, statistics. Returns the run id.

    ``launch_tp``: (tp, launch name) of the launch that wrote the dump: the tp it must have.

    ``stats_workers > 0`` computes statistics in that many processes (each reads its tensor
    memory-mapped from the store and returns only the numbers to this, the single writer).
    """
    if launch_tp is None:
        launch_tp = launch_tp_for(ws, dump_root)
    layout = detect(dump_root, model_config, launch_tp)
    from studio_backend.dumps.no_steps import require_steps

    require_steps(layout)  # a compiled engine's dump: say why, do not "ingest" nothing
    pool = None
    if stats_workers > 0:
        from studio_backend.procs import SafeProcessPool

        pool = SafeProcessPool(stats_workers, "forkserver")
    try:
        return _ingest_all(ws, layout, name, workers, pool, on_progress, with_stats)
    finally:
        if pool is not None:
            pool.shutdown()


def _ingest_all(ws, layout, name, workers, pool, on_progress, with_stats) -> str:  # noqa: ANN001
    ing = Ingestor(ws, layout, name, workers=workers, stats_pool=pool, on_progress=on_progress)
    files = layout.tensor_files()
    ing.progress.files_seen = 0
    ing.ingest_tool_stats()
    ing.ingest_all(files)
    if with_stats:
        ing.compute_stats()
    ing.finish("done")
    p = ing.progress
    ws.log("ingest", f"dump {ing.run_id} ({layout.format}, tp={layout.tp_size}): {p.files_done} files, "
                     f"{p.stitched} tensors stitched, {p.errors} errors")  # fmt: skip
    return ing.run_id
