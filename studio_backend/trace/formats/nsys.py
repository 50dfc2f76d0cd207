"""Nsight Systems SQLite export reader (``nsys export --type sqlite``).

Kernels come from ``CUPTI_ACTIVITY_KIND_KERNEL`` (names through ``StringIds``), their launches
from ``CUPTI_ACTIVITY_KIND_RUNTIME`` (same ``correlationId``), module ranges from
``NVTX_EVENTS`` push/pop and start/end ranges. Times are nanoseconds already.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError
from studio_backend.trace.formats.kineto import append_event, new_batch

NVTX_RANGE_TYPES = (59, 60)  # NvtxPushPopRange, NvtxStartEndRange


def _tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}


def _host(global_tid: int) -> tuple[str, str]:
    # globalTid packs the PID in bits 24..47 and the TID in the low 24 bits.
    return str((int(global_tid) >> 24) & 0xFFFFFF), str(int(global_tid))


def _rows(path: Path, con: sqlite3.Connection) -> Iterator[dict[str, Any]]:
    tables = _tables(con)
    if "CUPTI_ACTIVITY_KIND_KERNEL" not in tables:
        raise InputError(
            path,
            "no CUPTI_ACTIVITY_KIND_KERNEL table: not an nsys SQLite export with CUDA trace "
            f"(tables: {', '.join(sorted(tables)) or 'none'})",
        )
    kcols = _columns(con, "CUPTI_ACTIVITY_KIND_KERNEL")
    need = {"start", "end", "correlationId", "deviceId", "streamId"}
    if not need <= kcols:
        raise InputError(path, f"CUPTI_ACTIVITY_KIND_KERNEL lacks columns {sorted(need - kcols)}")
    name_col = "shortName" if "shortName" in kcols else "demangledName"
    has_strings = "StringIds" in tables
    name_sql = f"(SELECT value FROM StringIds WHERE id = k.{name_col})" if has_strings else "NULL"  # noqa: S608
    for start, end, corr, dev, stream, name in con.execute(
        f"SELECT k.start, k.end, k.correlationId, k.deviceId, k.streamId, {name_sql} "  # noqa: S608
        "FROM CUPTI_ACTIVITY_KIND_KERNEL k ORDER BY k.start"
    ):
        yield {"ph": "X", "cat": "kernel", "name": name or f"kernel#{corr}",
               "pid": f"device {dev}", "tid": f"stream {stream}", "ts_ns": start,
               "dur_ns": end - start, "correlation": corr, "stream": stream, "device": dev}  # fmt: skip
    if "CUPTI_ACTIVITY_KIND_RUNTIME" in tables:
        name_sql = "(SELECT value FROM StringIds WHERE id = r.nameId)" if has_strings else "NULL"
        for start, end, corr, gtid, name in con.execute(
            f"SELECT r.start, r.end, r.correlationId, r.globalTid, {name_sql} "  # noqa: S608
            "FROM CUPTI_ACTIVITY_KIND_RUNTIME r ORDER BY r.start"
        ):
            pid, tid = _host(gtid)
            yield {"ph": "X", "cat": "cuda_runtime", "name": name or "cudaRuntime",
                   "pid": pid, "tid": tid, "ts_ns": start, "dur_ns": end - start,
                   "correlation": corr}  # fmt: skip
    if "NVTX_EVENTS" in tables:
        ncols = _columns(con, "NVTX_EVENTS")
        text = "coalesce(n.text, (SELECT value FROM StringIds WHERE id = n.textId))"
        if "textId" not in ncols or not has_strings:
            text = "n.text"
        types = ", ".join(str(t) for t in NVTX_RANGE_TYPES)
        for start, end, gtid, name in con.execute(
            f"SELECT n.start, n.end, n.globalTid, {text} FROM NVTX_EVENTS n "  # noqa: S608
            f"WHERE n.eventType IN ({types}) AND n.end IS NOT NULL ORDER BY n.start"
        ):
            pid, tid = _host(gtid)
            yield {"ph": "X", "cat": "user_annotation", "name": name or "", "pid": pid,
                   "tid": tid, "ts_ns": start, "dur_ns": end - start}  # fmt: skip


def read_batches(path: str | Path, batch_size: int = 50_000) -> Iterator[dict[str, list[Any]]]:
    """Stream an nsys SQLite export as ``profile_events`` column batches."""
    path = Path(path)
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        raise InputError(
            path, f"not an SQLite database (nsys export --type sqlite): {exc}"
        ) from exc
    try:
        batch = new_batch()
        for n, row in enumerate(_rows(path, con)):
            _append_ns(batch, n, row)
            if len(batch["event_id"]) >= batch_size:
                yield batch
                batch = new_batch()
        if batch["event_id"]:
            yield batch
    except sqlite3.DatabaseError as exc:
        raise InputError(path, f"unreadable nsys export: {exc}") from exc
    finally:
        con.close()


def _append_ns(batch: dict[str, list[Any]], event_id: int, row: dict[str, Any]) -> None:
    """Append an event whose times are integer nanoseconds already."""
    append_event(batch, event_id, {"ph": row["ph"], "cat": row["cat"], "name": row["name"],
                                   "pid": row["pid"], "tid": row["tid"], "ts": 0, "dur": 0,
                                   "args": {"correlation": row.get("correlation"),
                                            "stream": row.get("stream"),
                                            "device": row.get("device")}})  # fmt: skip
    batch["ts_ns"][-1] = int(row["ts_ns"])
    batch["dur_ns"][-1] = int(row["dur_ns"])
