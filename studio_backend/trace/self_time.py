"""Self time of profile events, by torch.profiler's rule (``EventList._populate_cpu_children``).

Host events of one thread (``pid``, ``tid``) sorted by (start, longer first) form a tree: an
event is a child of the innermost open event that it starts strictly before the end of and
does not outlast. Self time = duration - the durations of its direct children. The host events
are the ones ``key_averages()`` lists: ``cpu_op``, ``user_annotation`` (``record_function``,
``ProfilerStep#N``), ``cuda_runtime`` / ``cuda_driver`` launches and, in a ``with_stack``
profile, the Python frames (``python_function``: torch builds its tree with them); NVTX ranges
(nsys) too. As in torch, an event that is the only child of a parent of the same name is merged
into that parent (``_remove_dup_nodes``), so counts are torch's, not the raw event count. A
device kernel's self time is its duration.
"""

from __future__ import annotations

from array import array

import duckdb
import numpy as np
import pyarrow as pa

from studio_backend.trace.attribution import DEVICE_CATS

HOST_CATS = (
    "cpu_op", "user_annotation", "cuda_runtime", "cuda_driver", "python_function", "nvtx",
)  # fmt: skip
_IN = lambda cats: ", ".join(f"'{c}'" for c in cats)  # noqa: E731

_HOST = f"""
    SELECT pid, tid, event_id, ts_ns, dur_ns, name FROM profile_events
    WHERE profile_id = ? AND ph = 'X' AND cat IN ({_IN(HOST_CATS)})
    ORDER BY pid, tid, ts_ns, dur_ns DESC, event_id
"""  # noqa: S608 - constants
_DEVICE_INSERT = f"""
    INSERT INTO profile_self_time SELECT profile_id, event_id, dur_ns FROM profile_events
    WHERE profile_id = ? AND ph = 'X' AND cat IN ({_IN(DEVICE_CATS)})
"""  # noqa: S608 - constants


class _Frame:
    """An event while it is open (its children are still arriving) or just closed."""

    __slots__ = ("children", "dur", "end", "idx", "name")

    def __init__(self, idx: int, end: int, dur: int, name: str) -> None:
        self.idx, self.end, self.dur, self.name = idx, end, dur, name
        self.children: list[_Frame] = []


def _close(frame: _Frame, own: array, alive: bytearray) -> None:
    """Final children known: merge same-named only children (torch's ``_remove_dup_nodes``:
    the child's row goes, the parent adopts its children), then the self time."""
    kids = frame.children
    while len(kids) == 1 and kids[0].name == frame.name:
        alive[kids[0].idx] = 0
        kids = kids[0].children
    frame.children = kids
    own[frame.idx] = frame.dur - sum(k.dur for k in kids)
    for k in kids:  # grandchildren are no longer needed
        k.children = []


def host_self_times(cur: duckdb.DuckDBPyConnection, profile_id: str) -> pa.Table:
    """(event_id, self_ns) of every host event of the profile that torch keeps (a merged
    duplicate has no row: its time is its parent's). One streamed pass per thread with a stack
    of open events; memory holds only open events and their direct children."""
    result = cur.execute(_HOST, [profile_id])
    ids = array("q")
    own = array("q")
    alive = bytearray()
    last_thread = None
    stack: list[_Frame] = []
    while chunk := result.fetchmany(100_000):
        for pid, tid, eid, ts, dur, name in chunk:
            if (pid, tid) != last_thread:
                while stack:
                    _close(stack.pop(), own, alive)
                last_thread = (pid, tid)
            end = ts + dur
            while stack and (ts >= stack[-1].end or end > stack[-1].end):
                _close(stack.pop(), own, alive)
            frame = _Frame(len(ids), end, dur, name)
            ids.append(eid)
            own.append(dur)
            alive.append(1)
            if stack:
                stack[-1].children.append(frame)
            stack.append(frame)
    while stack:
        _close(stack.pop(), own, alive)
    keep = np.frombuffer(bytes(alive), dtype=np.uint8).astype(bool)
    return pa.table(
        {
            "event_id": np.frombuffer(ids, dtype=np.int64)[keep],
            "self_ns": np.frombuffer(own, dtype=np.int64)[keep],
        }
    )


def store_self_times(cur: duckdb.DuckDBPyConnection, profile_id: str) -> None:
    """Write ``profile_self_time`` for one profile (host events by the tree, device = dur)."""
    cur.execute("DELETE FROM profile_self_time WHERE profile_id = ?", [profile_id])
    cur.register("_self_host", host_self_times(cur, profile_id))
    try:
        cur.execute(
            "INSERT INTO profile_self_time SELECT ?, event_id, self_ns FROM _self_host",
            [profile_id],
        )
    finally:
        cur.unregister("_self_host")
    cur.execute(_DEVICE_INSERT, [profile_id])
