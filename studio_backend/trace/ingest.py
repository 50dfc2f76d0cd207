"""Write module traces and profiles into the workspace (one transaction each: a bad file
leaves nothing behind, a good one is stored exactly once)."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from studio_backend.errors import InputError
from studio_backend.trace.attribution import DEVICE_CATS, attribute
from studio_backend.trace.formats import kineto, nsys, torch_npu
from studio_backend.trace.self_time import store_self_times
from studio_backend.workspace import Workspace

if TYPE_CHECKING:  # the tracer imports torch; profile ingest does not need it
    from studio_backend.trace.module_tracer import ModuleCall

_EVENT_SCHEMA = pa.schema(
    [("event_id", pa.int64()), ("ph", pa.string()), ("cat", pa.string()), ("name", pa.string()),
     ("pid", pa.string()), ("tid", pa.string()), ("ts_ns", pa.int64()), ("dur_ns", pa.int64()),
     ("external_id", pa.int64()), ("correlation", pa.int64()), ("flow_id", pa.string()),
     ("stream", pa.int64()), ("device", pa.int32()), ("input_dims", pa.string())]
)  # fmt: skip


def detect_format(path: Path) -> str:
    """'kineto' (.json / .json.gz), 'nsys' (.sqlite) or 'torch_npu' (an *_ascend_pt dir)."""
    if path.is_dir():
        if torch_npu.find_output_dir(path) is not None:
            return "torch_npu"
        raise InputError(path, "directory holds no ASCEND_PROFILER_OUTPUT (torch_npu profile)")
    name = path.name.lower()
    if name.endswith((".sqlite", ".db")):
        return "nsys"
    if name.endswith((".json", ".json.gz", ".pt.trace.json", ".gz")):
        return "kineto"
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"SQLite format 3"):
        return "nsys"
    return "kineto"


def _batches(path: Path, fmt: str, bad: kineto.BadEvents) -> Iterator[dict[str, list[Any]]]:
    if fmt == "kineto":
        return kineto.read_batches(path, EVENT_BATCH, bad)
    if fmt == "nsys":
        return nsys.read_batches(path, EVENT_BATCH)
    if fmt == "torch_npu":
        return torch_npu.read_batches(path, EVENT_BATCH, bad)
    raise InputError(fmt, "unknown profile format (kineto, torch_npu, nsys)")


EVENT_BATCH = kineto.BATCH  # events per batch handed from a reader to DuckDB
BATCHES_PER_COMMIT = 5  # 5 x 50k events per transaction: bounded memory, few commits


def _groups(items: Iterator[Any], size: int) -> Iterator[Iterator[Any]]:
    """Consecutive groups of ``size`` items, each consumed lazily (batches stay streamed)."""
    it = iter(items)
    for first in it:
        yield itertools.chain([first], itertools.islice(it, size - 1))


def _drop_orphans(ws: Workspace) -> None:
    """Remove events of an ingest that was killed before it finished (no `profiles` row)."""
    with ws.transaction() as cur:
        for table in ("profile_events", "profile_attribution", "profile_self_time"):
            cur.execute(
                f"DELETE FROM {table} WHERE profile_id NOT IN (SELECT profile_id FROM profiles)"  # noqa: S608
            )


def _regular_files(src: Path) -> list[Path]:
    """The profile's files: ``src`` itself, or the regular files under a directory. A FIFO,
    socket or device is refused, never opened (opening a FIFO for reading blocks forever)."""
    if src.is_dir():
        return sorted(p for p in src.rglob("*") if p.is_file())
    if not src.is_file():  # is_file: a regular file (symlinks followed), checked without open
        raise InputError(src, "not a regular file (a FIFO, socket or device?): not opened")
    return [src]


def content_sha1(src: Path) -> str:
    """sha1 of the profile's bytes (a directory: each regular file's relative path and bytes)."""
    h = hashlib.sha1()  # noqa: S324 - an identity, not security
    for f in _regular_files(src):
        if f != src:
            h.update(str(f.relative_to(src)).encode("utf-8", "surrogateescape") + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def ingest_profile(
    ws: Workspace,
    path: str | Path,
    *,
    name: str | None = None,
    fmt: str | None = None,
    info: dict[str, Any] | None = None,
) -> str:
    """Ingest one profile (streamed in batches) and its attribution; returns the profile id.

    Idempotent: a profile whose bytes were ingested before returns the existing id (``info``
    gets ``existing=True``). Events with unusable times (negative durations, ts / dur that are
    not finite numbers in range) are skipped, counted in ``profiles.bad_events`` and ``info``.
    """
    info = info if info is not None else {}
    src = Path(path).expanduser().resolve()
    if not src.exists():
        raise InputError(src, "profile does not exist")
    sha1 = content_sha1(src)  # also refuses FIFOs and other non-regular files
    row = (
        ws.cursor()
        .execute(
            "SELECT profile_id, bad_events, first_bad_event FROM profiles WHERE content_sha1 = ?"
            " ORDER BY created_at LIMIT 1",
            [sha1],
        )
        .fetchall()
    )
    if row:
        info.update(existing=True, bad_events=int(row[0][1] or 0), first_bad=row[0][2])
        return str(row[0][0])
    fmt = fmt or detect_format(src)
    profile_id = f"p-{uuid.uuid4().hex[:10]}"
    _drop_orphans(ws)
    n_events = 0
    bad = kineto.BadEvents()
    try:
        # Events go in chunked transactions: one transaction over a 500 MB trace would hold
        # every row in DuckDB's transaction-local memory. The profile becomes visible only when
        # its `profiles` row is written (last); any failure deletes what was written.
        for group in _groups(_batches(src, fmt, bad), BATCHES_PER_COMMIT):
            with ws.transaction() as cur:
                for batch in group:
                    try:
                        table = pa.Table.from_pydict(batch, schema=_EVENT_SCHEMA)
                    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # the readers' net
                        raise InputError(
                            src, f"event values do not fit the profile tables ({exc})"
                        ) from exc
                    cur.register("_events_batch", table)
                    try:
                        cur.execute(
                            "INSERT INTO profile_events SELECT ? AS profile_id, * "
                            "FROM _events_batch",
                            [profile_id],
                        )
                    finally:
                        cur.unregister("_events_batch")
                    n_events += table.num_rows
        with ws.transaction() as cur:
            cats = ", ".join(f"'{c}'" for c in DEVICE_CATS)
            has_device = cur.execute(
                f"SELECT count(*) > 0 FROM profile_events WHERE profile_id = ? AND cat IN ({cats})",  # noqa: S608
                [profile_id],
            ).fetchone()[0]
            attribute(cur, profile_id)
            store_self_times(cur, profile_id)
            cur.execute(
                "INSERT INTO profiles (profile_id, name, source, format, n_events, has_device,"
                " content_sha1, bad_events, first_bad_event) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [profile_id, name or src.name, str(src), fmt, n_events, bool(has_device), sha1,
                 bad.count, bad.first],
            )  # fmt: skip
    except BaseException:
        with ws.transaction() as cur:
            cur.execute("DELETE FROM profile_events WHERE profile_id = ?", [profile_id])
            cur.execute("DELETE FROM profile_attribution WHERE profile_id = ?", [profile_id])
            cur.execute("DELETE FROM profile_self_time WHERE profile_id = ?", [profile_id])
        raise
    ws.log(
        "profile",
        f"ingested {fmt} profile {name or src.name} ({n_events:,} events"
        + (f", {bad.count:,} bad events skipped, first: {bad.first}" if bad.count else "")
        + ")",
    )
    info.update(existing=False, bad_events=bad.count, first_bad=bad.first)
    return profile_id


def store_trace(
    ws: Workspace,
    calls: list[ModuleCall],
    *,
    name: str,
    model: str | None = None,
    prompt: str | None = None,
) -> str:
    """Store one module call trace; returns its trace id."""
    from studio_backend.trace.module_tracer import calls_to_rows

    trace_id = f"t-{uuid.uuid4().hex[:10]}"
    rows = calls_to_rows(calls)
    with ws.transaction() as cur:
        cur.execute(
            "INSERT INTO trace_runs (trace_id, name, model, prompt, n_calls) VALUES (?, ?, ?, ?, ?)",
            [trace_id, name, model, prompt, len(rows)],
        )
        if rows:
            table = pa.Table.from_pylist([{"trace_id": trace_id, **r} for r in rows])
            cur.register("_calls", table)
            try:
                cur.execute(
                    "INSERT INTO trace_calls (trace_id, seq, module, module_class, layer, depth,"
                    " parent_seq, rank, in_shapes, in_dtypes, out_shapes, out_dtypes, wall_us)"
                    " SELECT trace_id, seq, module, module_class, layer, depth, parent_seq, rank,"
                    " in_shapes, in_dtypes, out_shapes, out_dtypes, wall_us FROM _calls"
                )
            finally:
                cur.unregister("_calls")
    ws.log("trace", f"stored module trace {name} ({len(rows):,} calls)")
    return trace_id
