"""Ingest seed-004 traces, their summary.json and Mooncake/Bailian prefix traces into DuckDB.

Files are read incrementally (``TailReader``): each poll takes the complete lines appended since
the last one (``.jsonl`` by seeking, ``.jsonl.gz`` through a streaming decompressor), so a trace
can be ingested while the producer is still writing it.

Fast path (steps traces): ``fastpath.prepare_chunk`` cuts the number arrays out of a chunk of
lines, parses ``selected_block_ids`` with numpy and computes the block-level aggregate
(``dsa_block_heat``); DuckDB's JSON reader parses the stripped lines with an explicit column
list; rows, aggregate and the new resume point go in one transaction. For a large plain file
the pre-parse runs in worker processes (``_poll_parallel``), one byte range each, while this
process inserts the chunks in order. Exact path (a chunk the fast path refuses or DuckDB
rejects): DuckDB on the whole chunk (``strip_arrays``), then line by line: bad lines are stored
with their line number and reason in ``dsa_bad_lines`` and never abort the ingest. The raw
``selected_token_pos`` stay in the source file, addressed by ``byte_offset``.
"""

from __future__ import annotations

import atexit
import collections
import functools
import hashlib
import json
import os
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from studio_backend.dsa import fastpath
from studio_backend.dsa.schema import validate_record
from studio_backend.errors import InputError
from studio_backend.procs import SafeProcessPool
from studio_backend.workspace import Workspace

CHUNK_BYTES = 64 << 20
# Chunks go through a RAM-backed temp file (NamedTemporaryFile: random name, O_EXCL).
_TMP_DIR = fastpath.TMP_DIR

# The steps column spec lives in fastpath (worker processes parse with it too).
STEP_COLUMNS, STEP_REQUIRED = fastpath.STEP_COLUMNS, fastpath.STEP_REQUIRED
EXTRA_CHECK = fastpath.EXTRA_CHECK
STEP_INSERT = f"""
INSERT INTO dsa_steps SELECT $trace, m.line_no, m.byte_offset, {fastpath.STEP_VALUES}
FROM dsa_chunk c JOIN dsa_meta m ON c.rowid = m.idx
"""  # noqa: S608 - constants
# The fast path: the values come parsed (fastpath.parse_scalars), in STEP_VALUES order.
FAST_STEP_INSERT = """
INSERT INTO dsa_steps SELECT $trace, $line0 + idx, $base + off, COLUMNS('^v[0-9]+$')
FROM dsa_fast
"""
HEAT_INSERT = """
INSERT INTO dsa_block_heat SELECT $trace, request_id, step_idx, block_id, lo, hi FROM dsa_heat
"""
PREFIX_COLUMNS = {
    "timestamp": "DOUBLE", "input_length": "BIGINT", "output_length": "BIGINT",
    "hash_ids": "BIGINT[]", "chat_id": "BIGINT", "parent_chat_id": "BIGINT", "turn": "INTEGER",
    "type": "VARCHAR",
}  # fmt: skip
PREFIX_INSERT = """
INSERT INTO dsa_prefix_requests
SELECT $trace, m.line_no, c.timestamp, c.input_length, c.output_length, c.hash_ids, c.chat_id,
       c.parent_chat_id, c.turn, c.type
FROM dsa_chunk c JOIN dsa_meta m ON c.rowid = m.idx
"""


# Number arrays the fast path never needs: cut before DuckDB parses the chunk (they are most of
# the bytes; the lines stay in the source file for drill-down).
_UNPARSED = (b'"selected_token_pos":', b'"scores_topk":', b'"hit_blocks":')


def strip_arrays(data: bytes, keys: tuple[bytes, ...] = _UNPARSED) -> bytes:
    """Replace the value of each ``"key": [numbers]`` by ``[]`` (bytes.find: memchr speed)."""
    for key in keys:
        parts: list[bytes] = []
        pos, n, find = 0, len(key), data.find
        while (i := find(key, pos)) >= 0:
            k = i + n
            while data[k : k + 1] == b" ":
                k += 1
            j = find(b"]", k)
            if data[k : k + 1] != b"[" or j < 0 or find(b"[", k + 1, j) >= 0:
                pos_next = i + n  # not a flat array: leave it to the parser
                parts.append(data[pos:pos_next])
                pos = pos_next
                continue
            parts += (data[pos : i + n], b"[]")
            pos = j + 1
        if parts:
            parts.append(data[pos:])
            data = b"".join(parts)
    return data


def heat_rows(
    request_id: np.ndarray, step_idx: np.ndarray, layer_id: np.ndarray, blocks: pa.ListArray
) -> pa.Table:
    """(request, step, block, mask_lo, mask_hi): which layers (bits) selected each block."""
    vals = blocks.values.to_numpy(zero_copy_only=False).astype(np.int64)
    offs = blocks.offsets.to_numpy()
    heat = fastpath.block_heat(request_id, step_idx, layer_id, vals[offs[0] : offs[-1]],
                               np.diff(offs))  # fmt: skip
    return pa.table(heat)


def _validate_prefix_line(rec: Any) -> list[str]:
    if not isinstance(rec, dict):
        return ["not a JSON object"]
    ids = rec.get("hash_ids")
    if not isinstance(ids, list) or not all(isinstance(x, int) for x in ids):
        return ["hash_ids is missing or not a list of integers"]
    for k in ("timestamp", "input_length", "output_length"):
        if k in rec and not isinstance(rec[k], int | float):
            return [f"{k} is not a number"]
    return []


@dataclass(frozen=True)
class Format:
    kind: str
    columns: dict[str, str]
    required: tuple[str, ...]
    inserts: tuple[str, ...]
    validate: Callable[[Any], list[str]]
    extra_check: str = ""  # SQL condition flagging rows the fast path must not accept


# A null inside selected_block_ids would become a garbage block id in dsa_block_heat (found by
# tests/faults/test_fuzz_readers.py): such rows go to the line-by-line validator.
STEPS = Format(
    "steps", STEP_COLUMNS, STEP_REQUIRED, (STEP_INSERT,),
    functools.partial(validate_record, positions="types"),
    f"{EXTRA_CHECK} OR list_count(selected_block_ids) <> len(selected_block_ids)"
    f" OR {fastpath.EXACT_CHECK}",
)  # fmt: skip
PREFIX = Format("prefix", PREFIX_COLUMNS, ("hash_ids",), (PREFIX_INSERT,), _validate_prefix_line)


class TailReader:
    """Complete lines appended to a (possibly gzip, possibly growing) file since the last read."""

    def __init__(self, path: Path, start: int = 0) -> None:
        self.path = path
        self.gz = path.suffix == ".gz"
        self.offset = start  # uncompressed bytes of complete lines already consumed
        self._raw_pos = 0  # compressed bytes fed to the decompressor (gzip only)
        self._skip = start if self.gz else 0
        self._pending = b""
        self._dec = zlib.decompressobj(wbits=31) if self.gz else None
        self._member_in = 0  # compressed bytes fed to the current gzip member
        self.corrupt: str | None = None  # why the gzip stream stopped decoding (then no more)
        # Resuming a plain file: did the last ingest end on a last line without newline
        # (``read_tail``)? Then the newline a writer adds later is that line's, not a blank one.
        self._check_resume = start > 0 and not self.gz

    def settle(self, fh: Any = None) -> None:
        """Resuming after ``read_tail`` took a last line without newline: step over the newline
        a writer appended to it since (else it would read as a blank line)."""
        if not self._check_resume:
            return
        if fh is None:
            with open(self.path, "rb") as f:
                return self.settle(f)
        fh.seek(self.offset - 1)
        two = fh.read(2)
        if len(two) == 2:
            self._check_resume = False
            if two[1:] == b"\n" and two[:1] != b"\n":
                self.offset += 1

    def read(self, max_bytes: int = CHUNK_BYTES) -> tuple[bytes, int]:
        """(complete lines, their uncompressed start offset); empty when nothing new."""
        with open(self.path, "rb") as fh:
            if not self.gz:
                self.settle(fh)
                fh.seek(self.offset)
                data = fh.read(max_bytes)
                if len(data) == max_bytes:  # a very long last line: grow until one ends
                    while b"\n" not in data[-max_bytes // 2 :] and (more := fh.read(max_bytes)):
                        data += more
                cut = data.rfind(b"\n") + 1
                start = self.offset
                self.offset += cut
                return data[:cut], start
            fh.seek(self._raw_pos)
            out = [self._pending]
            size = len(self._pending)
            while size < max_bytes and self.corrupt is None:
                raw = fh.read(1 << 20)
                if not raw:
                    break
                assert self._dec is not None
                try:
                    piece = self._dec.decompress(raw)
                except zlib.error as exc:
                    if self._raw_pos == 0:
                        raise InputError(self.path, f"not a gzip file ({exc})") from exc
                    self.corrupt = (
                        f"the gzip data is corrupt after {self._raw_pos} compressed bytes ({exc})"
                    )
                    break
                self._raw_pos += len(raw)
                self._member_in += len(raw)
                if self._skip:
                    drop = min(self._skip, len(piece))
                    piece, self._skip = piece[drop:], self._skip - drop
                out.append(piece)
                size += len(piece)
                if self._dec.eof:  # concatenated gzip members (appending writers)
                    rest = self._dec.unused_data
                    self._dec = zlib.decompressobj(wbits=31)
                    self._raw_pos -= len(rest)
                    self._member_in = 0
                    fh.seek(self._raw_pos)  # the next member starts in bytes already read
        data = b"".join(out)
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        start = self.offset
        self.offset += cut
        return data[:cut], start

    def truncated(self) -> str | None:
        """Why the file's end cannot be read (a gzip cut mid-stream or corrupt), else None.

        Meaningful once ``read`` returned everything: a gzip member that got input but never
        reached its end marker is a truncated file (or one still being written)."""
        if not self.gz:
            return None
        if self.corrupt is not None:
            return self.corrupt
        if self._member_in and self._dec is not None and not self._dec.eof:
            return (
                f"the gzip stream ends before its end marker after {self.offset}"
                " uncompressed bytes of complete lines"
            )
        return None

    def read_tail(self) -> tuple[bytes, int]:
        """The last line when it lacks its newline, as a complete line (with ``b"\\n"``), and its
        start offset; empty if there is none (or the gzip is cut: that tail is not a line)."""
        if self.gz:
            if self.truncated() is not None or not self._pending.strip():
                return b"", self.offset
            data, self._pending = self._pending, b""
        else:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
            if not data.strip() or b"\n" in data:  # nothing, or complete lines still unread
                return b"", self.offset
        start = self.offset
        self.offset += len(data)
        return data + b"\n", start


_COMPUTE: Any = object()  # _ingest_chunk: pre-parse the chunk here


class _Rejected(Exception):
    """DuckDB's fast path refused a chunk: it is re-read line by line."""


@dataclass
class IngestResult:
    trace_id: str
    kind: str
    rows: int
    bad_lines: int
    first_bad_line: int | None = None
    first_bad: str | None = None
    # optional field -> ingested rows lacking it (schema.OPTIONAL_FIELDS; absent: none lack it)
    missing_optional: dict[str, int] = field(default_factory=dict)
    truncated: str | None = None  # why the file's end could not be read (rows before it kept)

    def describe(self) -> str:
        """One line for people: rows, bad lines, and the optional fields rows lack."""
        msg = f"{self.kind} {self.trace_id}: {self.rows} rows"
        if self.bad_lines and self.first_bad and self.first_bad.startswith("file is truncated"):
            msg += f", {self.bad_lines} bad lines"
        elif self.bad_lines:
            msg += (
                f", {self.bad_lines} bad lines (first: line {self.first_bad_line}:"
                f" {self.first_bad})"
            )
        if self.truncated:
            msg += f"; FILE IS TRUNCATED: {self.truncated} (the rows before the cut are kept)"
        if self.missing_optional:
            msg += "; optional fields absent: " + ", ".join(
                f"{k} ({n} of {self.rows} rows)" for k, n in self.missing_optional.items()
            )
        return msg


def trace_id_for(path: Path) -> str:
    return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]  # noqa: S324 - an id


def detect_kind(path: Path) -> str:
    """'steps', 'prefix' or 'summary' from the file's content."""
    if path.suffix == ".json":
        return "summary"
    reader = TailReader(path)
    data, _ = reader.read(1 << 20)
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("event") == "dsa_topk":
            return "steps"
        if isinstance(rec, dict) and "hash_ids" in rec:
            return "prefix"
    raise InputError(
        path, "neither a seed-004 trace (event dsa_topk) nor a Mooncake/Bailian trace (hash_ids)"
    )


class Ingestor:
    """Incremental ingest of one file; ``poll()`` again to pick up lines appended meanwhile."""

    def __init__(self, ws: Workspace, path: Path, name: str | None = None, kind: str | None = None):
        self.ws = ws
        self.path = path.resolve()
        self.kind = kind or detect_kind(self.path)
        if self.kind not in ("steps", "prefix"):
            raise InputError(path, f"cannot stream a {self.kind} file")
        self.fmt = STEPS if self.kind == "steps" else PREFIX
        self.trace_id = trace_id_for(self.path)
        row = (
            ws.cursor()
            .execute(
                "SELECT lines_read, bytes_read FROM dsa_traces WHERE trace_id = ?", [self.trace_id]
            )
            .fetchall()
        )
        row = row[0] if row else None
        if row is None:
            with ws.transaction() as cur:
                cur.execute(
                    "INSERT INTO dsa_traces (trace_id, name, path, kind) VALUES (?, ?, ?, ?)",
                    [self.trace_id, name or _default_name(self.path), str(self.path), self.kind],
                )
            self.lines = 0
            start = 0
        else:
            self.lines, start = int(row[0]), int(row[1])
            if not self.path.suffix == ".gz" and self.path.stat().st_size < start:
                raise InputError(path, "file is shorter than what was already ingested from it")
        self.reader = TailReader(self.path, start)
        self.worker_cpu_s = 0.0  # CPU seconds of worker processes' pre-parsing (bench/dsa.py)
        # chunks per path, and how many a worker process pre-parsed (bench/dsa.py, tests)
        self.chunks = {"fast": 0, "exact": 0, "worker": 0}
        self.truncated: str | None = None  # set by finish()

    def poll(self, max_bytes: int = CHUNK_BYTES) -> int:
        """Ingest the complete lines appended since the last poll; return how many rows."""
        self.reader.settle()
        total = self._poll_parallel(max_bytes) if self.kind == "steps" else 0
        while True:
            data, start = self.reader.read(max_bytes)
            if not data:
                return total
            total += self._ingest_chunk(data, start, start + len(data))
            if len(data) < max_bytes // 2:
                return total

    def finish(self) -> int:
        """At the end of an ingest: read a last line that lacks its newline, and record a
        truncated or corrupt gzip as a bad line (once) so the loss is never silent. Returns
        the rows the last line added (0 or 1)."""
        data, start = self.reader.read_tail()
        rows = max(0, self._ingest_chunk(data, start, start + len(data) - 1)) if data else 0
        self.truncated = self.reader.truncated()
        if self.truncated is None:
            return rows
        msg = f"file is truncated: {self.truncated}"
        with self.ws.transaction() as cur:
            seen = cur.execute(
                "SELECT count(*) FROM dsa_bad_lines WHERE trace_id = ? AND error = ?",
                [self.trace_id, msg],
            ).fetchone()
            if not (seen and seen[0]):
                cur.execute(
                    "INSERT INTO dsa_bad_lines VALUES (?, ?, ?)",
                    [self.trace_id, self.lines + 1, msg],
                )
                cur.execute(
                    "UPDATE dsa_traces SET bad_lines = bad_lines + 1 WHERE trace_id = ?",
                    [self.trace_id],
                )
        return rows

    def _poll_parallel(self, max_bytes: int) -> int:
        """Chunks of a large plain file pre-parsed by worker processes, inserted here in order.

        The chunks are cut exactly where ``TailReader.read`` would cut them; a chunk whose cut
        cannot be found cheaply (no newline in its last MB) ends this phase: the sequential loop
        in ``poll`` takes over from there.
        """
        n_workers = worker_count()
        if self.reader.gz or n_workers < 1:
            return 0
        size = self.path.stat().st_size
        if size - self.reader.offset < PARALLEL_MIN_CHUNKS * max_bytes:
            return 0
        pool = _pool(n_workers)
        if pool is None:
            return 0
        total = 0
        inflight: collections.deque[tuple[int, int, Future | None]] = collections.deque()
        off = self.reader.offset
        local = True  # this process pre-parses the first chunk itself while the workers start
        with open(self.path, "rb") as fh:
            while True:
                while off < size and len(inflight) <= n_workers:
                    end = _cut(fh, off, size, max_bytes)
                    if end is None:
                        size = off  # stop planning: the sequential reader goes on from here
                        break
                    fut = None if local else _submit(pool, str(self.path), off, end)
                    inflight.append((off, end, fut))
                    off, local = end, False
                if not inflight:
                    return total
                start, end, fut = inflight.popleft()
                self.reader.offset = end
                if fut is None:  # done here (the first chunk, or the pool broke)
                    total += self._ingest_chunk(_read_range(self.path, start, end), start, end)
                    continue
                try:
                    prep = fut.result()
                    self.chunks["worker"] += 1
                except Exception:  # a dead worker: this process does the chunk
                    _drop_pool(pool)
                    prep = _COMPUTE
                data = _read_range(self.path, start, end) if prep is _COMPUTE else None
                total += self._ingest_chunk(data, start, end, prep)

    def _ingest_chunk(self, data: bytes | None, start: int, end: int, prep: Any = _COMPUTE) -> int:
        """Ingest the lines ``[start, end)`` of the file (``data``: their bytes, or None: read
        here if needed). ``prep``: their ``fastpath.prepare_chunk`` (None: refused, the exact
        path runs), by default computed here."""
        rows, bad, n_lines = -1, [], 0
        if self.kind == "steps":
            if prep is _COMPUTE:
                prep = fastpath.prepare_chunk(data) if data is not None else None
                if prep is not None and not fastpath.parse_scalars(prep):
                    prep = None
            if prep is not None and prep.table is not None:
                self.worker_cpu_s += prep.cpu_s
                rows = self._insert_fast(prep, start, end)
                self.lines += prep.n_lines
                self.chunks["fast"] += 1
                return rows
        if rows < 0:
            self.chunks["exact"] += 1
            if data is None:
                data = _read_range(self.path, start, end)
            buf = np.frombuffer(data, dtype=np.uint8)
            ends = np.flatnonzero(buf == 10)
            starts = np.concatenate([[0], ends[:-1] + 1])
            n_lines = len(ends)
            line_nos = np.arange(self.lines + 1, self.lines + 1 + n_lines, dtype=np.int64)
            if not np.any(ends - starts <= 1):  # blank lines take the careful path
                rows = self._try_fast(data, starts + start, line_nos)
            if rows < 0:
                rows, bad = self._careful(data, starts, ends, start, line_nos)
        with self.ws.transaction() as cur:
            cur.execute(
                "UPDATE dsa_traces SET lines_read = lines_read + ?, bytes_read = ?,"
                " bad_lines = bad_lines + ?, updated_at = current_timestamp WHERE trace_id = ?",
                [n_lines, end, len(bad), self.trace_id],
            )
        self.lines += n_lines
        return rows

    def _insert_fast(self, prep: fastpath.Prepared, base: int, end: int) -> int:
        """Rows (parsed), their block aggregate and the new resume point: one transaction."""
        with self.ws.transaction() as cur:
            cur.register("dsa_fast", prep.table)
            cur.register("dsa_heat", pa.table(prep.heat))
            try:
                cur.execute(
                    FAST_STEP_INSERT,
                    {"trace": self.trace_id, "line0": self.lines + 1, "base": base},
                )
                cur.execute(HEAT_INSERT, {"trace": self.trace_id})
                self._add_gaps(cur, "dsa_fast")
                cur.execute(
                    "UPDATE dsa_traces SET rows = rows + $n, lines_read = lines_read + $n,"
                    " bytes_read = $end, updated_at = current_timestamp,"
                    " run_name = coalesce(run_name, (SELECT any_value(run_name) FROM dsa_fast)),"
                    " dataset = coalesce(dataset, (SELECT any_value(dataset) FROM dsa_fast)),"
                    " block_size = coalesce(block_size, (SELECT any_value(v9) FROM dsa_fast))"
                    " WHERE trace_id = $trace",
                    {"n": prep.n_lines, "end": end, "trace": self.trace_id},
                )
            finally:
                cur.unregister("dsa_fast")
                cur.unregister("dsa_heat")
        return prep.n_lines

    def _load(self, cur: duckdb.DuckDBPyConnection, data: bytes) -> None:
        cols = "{" + ", ".join(f"{k}: '{v}'" for k, v in self.fmt.columns.items()) + "}"
        with tempfile.NamedTemporaryFile(suffix=".jsonl", dir=_TMP_DIR, delete=False) as tmp:
            tmp.write(data)
        try:
            cur.execute(
                "CREATE OR REPLACE TEMP TABLE dsa_chunk AS SELECT * FROM read_json(?,"  # noqa: S608 - constants
                f" format='newline_delimited', columns={cols})",
                [tmp.name],
            )
        finally:
            os.unlink(tmp.name)

    def _insert(self, data: bytes, offsets: np.ndarray, line_nos: np.ndarray) -> int:
        """Parse + insert ``data`` (one line per entry of line_nos); -1 if DuckDB rejects it."""
        try:
            return self._insert_tx(data, offsets, line_nos)
        except _Rejected:
            return -1

    def _insert_tx(self, data: bytes, offsets: np.ndarray, line_nos: np.ndarray) -> int:
        cur = self.ws.cursor()
        try:
            # Loaded in its own (auto-committed) statement: inside a transaction, rows of the
            # temp table would get transaction-local rowids, and rowid is the line index here.
            self._load(cur, data)
        except (
            duckdb.Error,
            UnicodeDecodeError,
        ) as exc:  # invalid UTF-8: DuckDB's result conversion
            raise _Rejected from exc
        try:
            return self._insert_loaded(offsets, line_nos)
        finally:
            cur.execute("DROP TABLE IF EXISTS dsa_chunk")

    def _insert_loaded(self, offsets: np.ndarray, line_nos: np.ndarray) -> int:
        with self.ws.transaction() as cur:
            nulls = " OR ".join(f"{c} IS NULL" for c in self.fmt.required)
            extra = f" OR {self.fmt.extra_check}" if self.fmt.extra_check else ""
            n, flagged = cur.execute(
                f"SELECT count(*), count(*) FILTER (WHERE {nulls}{extra}) FROM dsa_chunk"  # noqa: S608
            ).fetchall()[0]
            if n != len(line_nos) or flagged:
                raise _Rejected
            meta = pa.table(
                {"idx": np.arange(len(line_nos)), "line_no": line_nos, "byte_offset": offsets}
            )
            cur.register("dsa_meta", meta)
            try:
                for sql in self.fmt.inserts:
                    cur.execute(sql, {"trace": self.trace_id})
            finally:
                cur.unregister("dsa_meta")
            if self.kind == "steps":
                self._insert_heat(cur)
                self._add_gaps(cur, "dsa_chunk")
                cur.execute(
                    "UPDATE dsa_traces SET rows = rows + ?,"
                    " run_name = coalesce(run_name,"
                    "   (SELECT any_value(run_name->>'$') FROM dsa_chunk)),"
                    " dataset = coalesce(dataset, (SELECT any_value(dataset->>'$') FROM dsa_chunk)),"
                    " block_size = coalesce(block_size,"
                    "   (SELECT any_value(block_size_tokens) FROM dsa_chunk))"
                    " WHERE trace_id = ?",
                    [n, self.trace_id],
                )
            else:
                cur.execute(
                    "UPDATE dsa_traces SET rows = rows + ? WHERE trace_id = ?", [n, self.trace_id]
                )
        return int(n)

    def _add_gaps(self, cur: duckdb.DuckDBPyConnection, table: str) -> None:
        """Count the chunk's rows lacking each optional field into ``dsa_field_gaps``."""
        counts = cur.execute(f"SELECT {fastpath.GAP_COUNTS} FROM {table}").fetchone()  # noqa: S608 - constants
        assert counts is not None
        for name, n in zip(fastpath.GAP_FIELDS, counts, strict=True):
            if n:
                cur.execute(
                    "INSERT INTO dsa_field_gaps VALUES (?, ?, ?) ON CONFLICT (trace_id, field)"
                    " DO UPDATE SET lines = lines + excluded.lines",
                    [self.trace_id, name, int(n)],
                )

    def _insert_heat(self, cur: duckdb.DuckDBPyConnection) -> None:
        """The block-level aggregate of this chunk (numpy: dense scatter + bit packing)."""
        tb = cur.sql(
            "SELECT request_id, step_idx, layer_id, selected_block_ids FROM dsa_chunk"
        ).to_arrow_table()
        heat = heat_rows(
            tb.column("request_id").to_numpy(), tb.column("step_idx").to_numpy(),
            tb.column("layer_id").to_numpy(), tb.column("selected_block_ids").combine_chunks(),
        )  # fmt: skip
        cur.register("dsa_heat", heat)
        try:
            cur.execute(HEAT_INSERT, {"trace": self.trace_id})
        finally:
            cur.unregister("dsa_heat")

    def _try_fast(self, data: bytes, offsets: np.ndarray, line_nos: np.ndarray) -> int:
        if self.kind != "steps":
            return self._insert(data, offsets, line_nos)
        if not fastpath.positions_plain(data):  # as the fast path checks them, then cut
            return -1  # the validator judges each line
        return self._insert(strip_arrays(data), offsets, line_nos)

    def _careful(
        self, data: bytes, starts: np.ndarray, ends: np.ndarray, base: int, line_nos: np.ndarray
    ) -> tuple[int, list[tuple[int, str]]]:
        good: list[int] = []
        bad: list[tuple[int, str]] = []
        for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            line = data[s:e]
            if not line.strip():
                continue
            try:
                errs = self.fmt.validate(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                errs = [f"not valid JSON ({exc})"]
            if errs:
                bad.append((int(line_nos[i]), "; ".join(errs)[:500]))
            else:
                good.append(i)
        rows = self._insert_subset(data, starts, ends, base, line_nos, good, bad)
        if bad:
            with self.ws.transaction() as cur:
                cur.executemany(
                    "INSERT INTO dsa_bad_lines VALUES (?, ?, ?)",
                    [[self.trace_id, n, msg] for n, msg in bad],
                )
        return rows, bad

    def _insert_subset(self, data, starts, ends, base, line_nos, idx, bad) -> int:
        """Insert lines ``idx``; a subset DuckDB still rejects is bisected down to single lines."""
        if not idx:
            return 0
        payload = b"".join(data[starts[i] : ends[i] + 1] for i in idx)
        rows = self._insert(payload, starts[idx] + base, line_nos[idx])
        if rows >= 0:
            return rows
        if len(idx) == 1:
            bad.append((int(line_nos[idx[0]]), "values out of range for the trace schema"))
            return 0
        mid = len(idx) // 2
        return self._insert_subset(data, starts, ends, base, line_nos, idx[:mid], bad) + (
            self._insert_subset(data, starts, ends, base, line_nos, idx[mid:], bad)
        )

    def result(self) -> IngestResult:
        cur = self.ws.cursor()
        rows, nbad = cur.execute(
            "SELECT rows, bad_lines FROM dsa_traces WHERE trace_id = ?", [self.trace_id]
        ).fetchall()[0]
        first = cur.execute(
            "SELECT line_no, error FROM dsa_bad_lines WHERE trace_id = ? ORDER BY line_no LIMIT 1",
            [self.trace_id],
        ).fetchall()
        first = first[0] if first else None
        return IngestResult(
            self.trace_id, self.kind, int(rows), int(nbad),
            first[0] if first else None, first[1] if first else None,
            missing_fields(self.ws, self.trace_id), self.truncated,
        )  # fmt: skip


def missing_fields(ws: Workspace, trace_id: str) -> dict[str, int]:
    """Optional field -> ingested rows of the trace lacking it, in schema order."""
    got = dict(
        ws.cursor()
        .execute("SELECT field, lines FROM dsa_field_gaps WHERE trace_id = ?", [trace_id])
        .fetchall()
    )
    return {k: int(got[k]) for k in fastpath.GAP_FIELDS if got.get(k)}


PARALLEL_MIN_CHUNKS = 2  # below this many chunks a poll runs in this process only
_POOL: ProcessPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def worker_count() -> int:
    """Worker processes for large plain traces: $STUDIO_DSA_WORKERS, else 2 on >= 2 cores."""
    env = os.environ.get("STUDIO_DSA_WORKERS", "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            pass
    return 2 if (os.cpu_count() or 1) >= 2 else 0


def _pool(n: int) -> ProcessPoolExecutor | None:
    """The process-wide pool of ``n`` spawned workers (kept for later ingests)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None and _POOL._max_workers != n:
            _POOL.shutdown(wait=False, cancel_futures=True)
            _POOL = None
        if _POOL is None:
            try:
                # spawn: no inherited DuckDB handle or threads; the workers import numpy only.
                _POOL = SafeProcessPool(n, "spawn", always=True)
            except (OSError, ValueError):
                return None
        return _POOL


def _submit(pool: ProcessPoolExecutor, path: str, start: int, end: int) -> Future | None:
    try:
        return pool.submit(fastpath.read_prepare, path, start, end)
    except RuntimeError:  # broken or shut down: this process does the chunk
        _drop_pool(pool)
        return None


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    global _POOL
    with _POOL_LOCK:
        if _POOL is pool:
            _POOL = None
    pool.shutdown(wait=False, cancel_futures=True)


@atexit.register
def _shutdown_pool() -> None:
    if _POOL is not None:
        _POOL.shutdown(wait=False, cancel_futures=True)


def _cut(fh, off: int, size: int, max_bytes: int) -> int | None:
    """Where ``TailReader.read(max_bytes)`` from ``off`` would end (file of ``size`` bytes), or
    None when the last MB of that range has no newline (the reader then decides)."""
    avail = min(max_bytes, size - off)
    w = min(avail, max(1, max_bytes // 2), 1 << 20)
    fh.seek(off + avail - w)
    k = fh.read(w).rfind(b"\n")
    return None if k < 0 else off + avail - w + k + 1


def _read_range(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    if len(data) != end - start:
        raise InputError(path, "file shrank while it was being ingested")
    return data


def _default_name(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def attach_summary(ws: Workspace, summary_path: Path, trace_id: str | None = None) -> str:
    """Store a summary.json on its trace (the trace in the same directory, or a new entry)."""
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(summary_path, f"not a readable JSON file ({exc})") from exc
    if not isinstance(summary, dict):
        raise InputError(summary_path, "summary.json is not a JSON object")
    cur = ws.cursor()
    if trace_id is None:
        row = cur.execute(
            "SELECT trace_id FROM dsa_traces WHERE kind = 'steps' AND path LIKE ? ORDER BY"
            " created_at DESC LIMIT 1",
            [str(summary_path.resolve().parent) + os.sep + "%"],
        ).fetchall()
        row = row[0] if row else None
        trace_id = row[0] if row else None
    with ws.transaction() as cur:
        if trace_id is None:
            trace_id = trace_id_for(summary_path)
            cur.execute(
                "INSERT OR REPLACE INTO dsa_traces (trace_id, name, path, kind, run_name, dataset)"
                " VALUES (?, ?, ?, 'summary', ?, ?)",
                [trace_id, _default_name(summary_path), str(summary_path.resolve()),
                 summary.get("run_name"), summary.get("dataset")],
            )  # fmt: skip
        cur.execute(
            "UPDATE dsa_traces SET summary = ? WHERE trace_id = ?",
            [json.dumps(summary), trace_id],
        )
    return trace_id


def ingest_path(
    ws: Workspace, path: Path, name: str | None = None, follow_s: float = 0.0
) -> IngestResult:
    """Ingest a trace / prefix trace (following it while it grows) or attach a summary.json."""
    kind = detect_kind(path)
    if kind == "summary":
        tid = attach_summary(ws, path)
        ws.log("dsa", f"summary {path.name} attached to {tid}")
        return IngestResult(tid, "summary", 0, 0)
    ing = Ingestor(ws, path, name=name, kind=kind)
    ing.poll()
    idle_since = time.monotonic()
    while follow_s > 0 and time.monotonic() - idle_since < follow_s:
        time.sleep(min(1.0, follow_s))
        if ing.poll():
            idle_since = time.monotonic()
    ing.finish()
    summary = path.resolve().parent / "summary.json"
    if kind == "steps" and summary.is_file():
        attach_summary(ws, summary, ing.trace_id)
    res = ing.result()
    ws.log(
        "dsa", f"ingested {res.kind} trace {path.name}: {res.rows} rows, {res.bad_lines} bad lines"
    )
    return res
