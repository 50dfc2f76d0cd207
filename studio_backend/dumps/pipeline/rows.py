"""Rows stage: live progress counters and the single writer's queued, batched inserts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

# error kinds a file clears by loading later (it was caught while being written)
STALE_KINDS = ("unreadable", "not_tensor", "unsupported_dtype")


@dataclass
class Progress:
    """Live counters for the UI and the CLI progress bar."""

    files_seen: int = 0
    files_done: int = 0
    bytes_done: int = 0
    errors: int = 0
    queue_depth: int = 0
    stitched: int = 0
    stats_done: int = 0
    started: float = field(default_factory=time.monotonic)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        dt = time.monotonic() - self.started
        return self.bytes_done / 1e6 / dt if dt > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "files_seen": self.files_seen, "files_done": self.files_done,
            "bytes_done": self.bytes_done, "errors": self.errors, "queue_depth": self.queue_depth,
            "stitched": self.stitched, "stats_done": self.stats_done,
            "mb_per_s": round(self.mb_per_s, 2),
        }  # fmt: skip


class RowWriter:
    """The writer's row queue (mixed into ``Ingestor``: uses ``ws``, ``run_id``, ``progress``,
    ``_batched``, ``_last_flush``)."""

    def _error(self, path: Path | str, kind: str, message: str, once: bool = False) -> None:
        with self.ws.transaction() as cur:
            if (
                once
                and cur.execute(
                    "SELECT 1 FROM dump_ingest_errors WHERE run_id = ? AND path = ? AND kind = ? AND message = ?",
                    [self.run_id, str(path), kind, message],
                ).fetchone()
            ):
                return
            cur.execute(
                "INSERT INTO dump_ingest_errors (run_id, path, kind, message) VALUES (?, ?, ?, ?)",
                [self.run_id, str(path), kind, message],
            )
        if kind in STALE_KINDS:
            self._stale_errors = True
        self.progress.errors += 1

    def _write(self, **rows: list) -> None:
        """Record rows (tensors, files, modules, reports) now, or queue them while batched."""
        if self._batched is not None:
            for k, v in rows.items():
                self._batched.setdefault(k, []).extend(v)
            return
        self._commit(rows)

    def _flush(self) -> None:
        """Commit the queued rows: one statement per table, one transaction (a WAL sync)."""
        rows, self._batched = self._batched or {}, {}
        self._commit(rows)
        self._last_flush = time.monotonic()

    def _flush_now(self) -> None:
        if self._batched:
            self._flush()

    def _commit(self, rows: dict[str, list]) -> None:
        if not any(rows.values()):
            return
        with self.ws.transaction() as cur:
            self._commit_rows(cur, rows)

    def _commit_rows(self, cur, rows: dict[str, list]) -> None:  # noqa: ANN001 - DuckDB cursor
        """Insert queued rows in the caller's transaction (a subclass adds its own tables)."""
        tensors, files = rows.get("tensors"), rows.get("files")
        modules, reports = rows.get("modules"), rows.get("reports")
        if tensors:
            self._insert_tensors(cur, tensors)
        if files:
            fdf = pd.DataFrame(
                files, columns=["run_id", "relpath", "content_key", "size", "status"]
            ).drop_duplicates("relpath", keep="last")
            cur.register("_new_files", fdf)
            cur.execute(
                "INSERT OR REPLACE INTO dump_ingest_files (run_id, relpath, content_key, size, status) "
                "SELECT run_id, relpath, content_key, size, status FROM _new_files"
            )
            cur.unregister("_new_files")
        if modules:
            mdf = pd.DataFrame(
                modules, columns=["run_id", "module", "module_class", "layer", "kind"]
            ).drop_duplicates("module")
            cur.register("_new_mods", mdf)
            cur.execute(
                "INSERT INTO dump_modules SELECT * FROM _new_mods ON CONFLICT DO UPDATE SET "
                "module_class = coalesce(excluded.module_class, dump_modules.module_class)"
            )
            cur.unregister("_new_mods")
        if reports:
            cur.register("_new_reports", pa.Table.from_pylist(reports))
            try:
                cur.execute(
                    "INSERT OR REPLACE INTO dump_stitch_report BY NAME SELECT * FROM _new_reports"
                )
            finally:
                cur.unregister("_new_reports")

    def _insert_tensors(self, cur, rows: list[dict[str, Any]]) -> None:
        cur.register("_new_tensors", pa.Table.from_pylist(rows))  # ~2x faster than pandas
        try:
            cur.execute("INSERT INTO dump_tensors BY NAME SELECT * FROM _new_tensors")
        finally:
            cur.unregister("_new_tensors")
