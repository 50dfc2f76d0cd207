"""Kineto / Chrome-trace JSON reader (torch.profiler ``export_chrome_trace``, torch_npu
``trace_view.json``), streamed with ijson so a 500 MB trace is never held in memory whole.

Accepts ``{"traceEvents": [...], ...}`` and a bare ``[...]`` array, plain or gzip-compressed.
Yields column batches (dict of lists) ready for the ``profile_events`` table.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import ijson

from studio_backend.errors import InputError

COLUMNS = (
    "event_id", "ph", "cat", "name", "pid", "tid", "ts_ns", "dur_ns", "external_id",
    "correlation", "flow_id", "stream", "device", "input_dims",
)  # fmt: skip
# Complete events carry durations; flow starts/finishes ('s'/'f', e.g. ac2g) link launches to
# kernels. Metadata ('M'), instants ('i') and counters ('C') carry no time and are skipped.
KEPT_PHASES = {"X", "s", "f"}
BATCH = 50_000


_EMPTY: dict[str, Any] = {}
# |ts| and dur in microseconds whose nanoseconds fit the int64 columns (about 292 years).
MAX_US = 9.2e15


class BadEvents:
    """Events skipped as bad (a time that is not a finite number in range, a negative
    duration): counted, the first one described; the ingest reports them."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def add(self, event_no: int, problem: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = f"event {event_no}: {problem}"[:300]


def _us(value: Any) -> float | None:
    """A time in microseconds: a number, or a string holding one (torch_npu writes strings)."""
    if type(value) is bool:
        return None
    if type(value) is str:
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return value if -MAX_US < value < MAX_US else None  # NaN fails both tests


def time_problem(ev: dict[str, Any]) -> str | None:
    """Why ``ev``'s ts / dur cannot be stored (None: they can)."""
    ts, dur = ev.get("ts"), ev.get("dur", 0)
    if _us(ts) is None:
        return f"ts {str(ts)[:40]!r} is not a finite number of microseconds in range"
    if dur is None:
        return None
    d = _us(dur)
    if d is None:
        return f"dur {str(dur)[:40]!r} is not a finite number of microseconds in range"
    if d < 0:
        return f"negative duration (dur {dur})"
    return None


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return path.open("rb")


def _first_char(stream: IO[bytes]) -> bytes:
    while True:
        ch = stream.read(1)
        if not ch:
            return b""
        if not ch.isspace():
            return ch


_I64 = 1 << 63


def _int_or_none(value: Any, limit: int = _I64) -> int | None:
    """An integer id (External id, correlation, stream, device) or None when it is not one that
    fits its column (int64; device: int32)."""
    if value is None or value == "" or type(value) is bool:
        return None
    try:
        out = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return out if -limit <= out < limit else None


def _str_or_none(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _ns(value: Any) -> int:
    # Kineto times are microseconds with nanosecond decimals; integers keep sums exact.
    return round(float(value) * 1000.0) if value is not None else 0


def new_batch() -> dict[str, list[Any]]:
    return {c: [] for c in COLUMNS}


def append_event(batch: dict[str, list[Any]], event_id: int, ev: dict[str, Any]) -> None:
    """Append one trace event (already known to be of a kept phase) to a column batch."""
    # The hot loop of a large ingest: plain dict lookups, no helper calls on the common path.
    args = ev.get("args") or _EMPTY
    if type(args) is not dict:  # a hand-edited file: no usable args
        args = _EMPTY
    batch["event_id"].append(event_id)
    batch["ph"].append(ev["ph"])
    cat = ev.get("cat")
    batch["cat"].append(cat if cat is None or type(cat) is str else str(cat))
    name = ev.get("name", "")
    batch["name"].append(name if type(name) is str else str(name))
    pid, tid = ev.get("pid"), ev.get("tid")
    batch["pid"].append(None if pid is None else str(pid))
    batch["tid"].append(None if tid is None else str(tid))
    ts, dur = ev.get("ts"), ev.get("dur", 0)
    # Kineto times are microseconds with nanosecond decimals; integers keep sums exact.
    batch["ts_ns"].append(round(ts * 1000.0) if type(ts) is float else _ns(ts))
    batch["dur_ns"].append(round(dur * 1000.0) if type(dur) is float else _ns(dur))
    ext, corr = args.get("External id"), args.get("correlation")
    batch["external_id"].append(ext if type(ext) is int or ext is None else _int_or_none(ext))
    batch["correlation"].append(corr if type(corr) is int or corr is None else _int_or_none(corr))
    flow = ev.get("id")
    batch["flow_id"].append(None if flow is None else str(flow))
    stream, device = args.get("stream"), args.get("device")
    batch["stream"].append(
        stream if type(stream) is int or stream is None else _int_or_none(stream)
    )
    batch["device"].append(_int_or_none(device, 1 << 31))  # an INTEGER column
    dims = args.get("Input Dims")
    batch["input_dims"].append(None if dims is None else json.dumps(dims, separators=(",", ":")))


def read_batches(
    path: str | Path, batch_size: int = BATCH, bad: BadEvents | None = None
) -> Iterator[dict[str, list[Any]]]:
    """Stream the kept events of a Chrome trace as column batches.

    Raises ``InputError`` naming the file for a missing ``traceEvents`` list, a truncated or
    malformed document, or an event without the fields every event needs. An event whose
    ts / dur is not a finite number in range, or whose duration is negative, is skipped and
    counted in ``bad``.
    """
    path = Path(path)
    bad = bad if bad is not None else BadEvents()
    try:
        stream = _open(path)
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from exc
    with stream:
        try:
            first = _first_char(stream)
        except (OSError, EOFError) as exc:  # gzip errors surface here
            raise InputError(path, f"cannot read: {exc}") from exc
        if first not in (b"{", b"["):
            raise InputError(path, "not a Chrome trace: expected a JSON object or array")
        stream.seek(0)
        prefix = "traceEvents.item" if first == b"{" else "item"
        batch = new_batch()
        n = 0
        seen_any = False
        try:
            for ev in ijson.items(stream, prefix, use_float=True):
                seen_any = True
                if not isinstance(ev, dict):
                    raise InputError(path, f"event {n} is not a JSON object")
                ph = ev.get("ph")
                if type(ph) is not str or ph not in KEPT_PHASES:
                    continue
                if "ts" not in ev or "name" not in ev:
                    raise InputError(path, f"event {n} ({ph!r}) has no 'ts' or 'name'")
                ts, dur = ev["ts"], ev.get("dur", 0)
                if not (
                    (type(ts) is float or type(ts) is int)
                    and (type(dur) is float or type(dur) is int)
                    and -MAX_US < ts < MAX_US
                    and 0 <= dur < MAX_US
                ) and (problem := time_problem(ev)):
                    bad.add(n, problem)
                    n += 1
                    continue
                append_event(batch, n, ev)
                n += 1
                if len(batch["event_id"]) >= batch_size:
                    yield batch
                    batch = new_batch()
        except ijson.common.IncompleteJSONError as exc:
            raise InputError(
                path, f"truncated or malformed JSON after {n} events: {_first_line(exc)}"
            ) from exc
        except ijson.common.JSONError as exc:
            raise InputError(path, f"malformed JSON after {n} events: {_first_line(exc)}") from exc
        except (OSError, EOFError) as exc:
            raise InputError(path, f"cannot read after {n} events: {exc}") from exc
        if first == b"{" and not seen_any:
            _require_trace_events(path)
        if batch["event_id"]:
            yield batch


def _first_line(exc: Exception) -> str:
    # yajl's messages draw a caret over the bad byte on extra lines: keep the first one.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _require_trace_events(path: Path) -> None:
    """An object without (or with an empty) ``traceEvents``: say which."""
    with _open(path) as stream:
        for prefix, event, _ in ijson.parse(stream):
            if prefix == "traceEvents" and event == "start_array":
                return  # present but empty: a valid, empty profile
    raise InputError(path, "no 'traceEvents' list: not a torch.profiler / Chrome trace")
