"""Kernel -> op -> module -> layer attribution of an ingested profile.

A device kernel is tied to its host launch by ``correlation`` (Kineto ``cuda_runtime`` events,
Nsight ``CUPTI_ACTIVITY_KIND_RUNTIME``) or, failing that, by a flow event ending on it (``ac2g``,
torch_npu's host-to-device flows). Its op is the ``cpu_op`` with the same ``External id`` (else
the innermost ``cpu_op`` around the launch); its module is the innermost module annotation
around the launch: a ``user_annotation`` (``record_function(<module path>)``, NVTX range) or,
without one, a ``nn.Module: Class_N`` python_function (``with_stack``). On CPU-only profiles the
subjects are the top-level ``cpu_op`` events. Whatever cannot be placed lands in an explicit
"unattributed" bucket with its reason: CUDA-graph replays (many kernels, one correlation),
kernels without a launch, launches outside every module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from itertools import groupby
from typing import Any

import duckdb
import pyarrow as pa

from studio_backend.trace.naming import layer_of

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
UNATTRIBUTED = "unattributed"
NN_MODULE = "nn.Module: "


@dataclass
class _Frame:
    end: int
    name: str


def _kernel_table(cur: duckdb.DuckDBPyConnection, pid: str) -> None:
    """Temp table ``_attr_k``: device events with their launch anchor (pid, tid, ts), the
    number of kernels sharing their correlation and the op with the same External id."""
    cats = ", ".join(f"'{c}'" for c in DEVICE_CATS)
    launch_cats = ", ".join(f"'{c}'" for c in LAUNCH_CATS)
    cur.execute("DROP TABLE IF EXISTS _attr_k")
    cur.execute(
        f"""
        CREATE TEMP TABLE _attr_k AS
        WITH ev AS (SELECT * FROM profile_events WHERE profile_id = $pid),
        k AS (SELECT * FROM ev WHERE ph = 'X' AND cat IN ({cats})),
        per_corr AS (
            SELECT correlation, count(*) AS n FROM k
            WHERE correlation IS NOT NULL GROUP BY correlation),
        launch AS (
            SELECT correlation, arg_min(pid, ts_ns) AS pid, arg_min(tid, ts_ns) AS tid,
                   min(ts_ns) AS ts_ns, arg_min(name, ts_ns) AS name
            FROM ev WHERE ph = 'X' AND cat IN ({launch_cats}) AND correlation IS NOT NULL
            GROUP BY correlation),
        flow AS (
            SELECT f.pid AS fpid, f.tid AS ftid, f.ts_ns AS fts,
                   arg_min(s.pid, s.ts_ns) AS pid, arg_min(s.tid, s.ts_ns) AS tid,
                   min(s.ts_ns) AS ts_ns
            FROM ev f JOIN ev s ON s.flow_id = f.flow_id AND s.ph = 's'
                 AND coalesce(s.cat, '') = coalesce(f.cat, '')
            WHERE f.ph = 'f' GROUP BY ALL),
        ops AS (
            SELECT external_id, arg_min(name, ts_ns) AS name FROM ev
            WHERE ph = 'X' AND cat = 'cpu_op' AND external_id IS NOT NULL GROUP BY external_id)
        SELECT k.event_id, k.name, k.dur_ns, k.correlation, coalesce(per_corr.n, 0) AS n_corr,
               launch.name AS launch_name, coalesce(launch.pid, flow.pid) AS apid,
               coalesce(launch.tid, flow.tid) AS atid,
               coalesce(launch.ts_ns, flow.ts_ns) AS ats, ops.name AS ext_op,
               (coalesce(per_corr.n, 0) > 1
                OR contains(lower(coalesce(launch.name, '')), 'graphlaunch')) AS graph
        FROM k
        LEFT JOIN per_corr USING (correlation)
        LEFT JOIN launch USING (correlation)
        LEFT JOIN flow ON flow.fpid = k.pid AND flow.ftid = k.tid AND flow.fts = k.ts_ns
        LEFT JOIN ops ON ops.external_id = k.external_id
        """,  # noqa: S608
        {"pid": pid},
    )


_HOST_ROWS = """
    SELECT pid, tid, ts_ns, -dur_ns AS neg, 0 AS ord,
           CASE WHEN cat = 'cpu_op' THEN 'op'
                WHEN cat = 'python_function' THEN 'nn' ELSE 'ann' END AS kind,
           name, event_id, dur_ns
    FROM profile_events
    WHERE profile_id = $pid AND ph = 'X' AND (
        cat = 'cpu_op'
        OR (cat IN ('user_annotation', 'nvtx') AND NOT starts_with(name, 'ProfilerStep#'))
        OR (cat = 'python_function' AND starts_with(name, $nn)))
    UNION ALL
    SELECT apid, atid, ats, 0, 1, 'point', NULL, event_id, 0 FROM _attr_k
    WHERE ats IS NOT NULL AND NOT graph
    -- thread, start, longer first (parents before children), intervals before points
    ORDER BY pid, tid, ts_ns, neg, ord
"""


def _timeline(cur: duckdb.DuckDBPyConnection, profile_id: str) -> Iterator[tuple[Any, ...]]:
    """Host intervals (annotations, nn.Module frames, cpu ops) and launch points of a profile,
    sorted by DuckDB and streamed in chunks so a large profile is never all in Python."""
    result = cur.execute(_HOST_ROWS, {"pid": profile_id, "nn": NN_MODULE})
    while chunk := result.fetchmany(100_000):
        yield from chunk


@lru_cache(maxsize=65536)
def _layer(name: str) -> int | None:
    return layer_of(name)


def _current_module(ann: list[_Frame], nn: list[_Frame]) -> tuple[str | None, int | None]:
    module = ann[-1].name if ann else (nn[-1].name.removeprefix(NN_MODULE) if nn else None)
    layer = None
    for frame in reversed(ann):
        layer = _layer(frame.name)
        if layer is not None:
            break
    return module, layer


def _sweep(timeline: Iterable[tuple[Any, ...]]) -> tuple[pa.Table, pa.Table]:
    """One pass per host thread in time order with a stack per kind of interval.

    Returns two column tables: the (module, layer, innermost op) around each launch point, and
    the top-level cpu ops with their module and layer.
    """
    points: dict[str, list[Any]] = {"event_id": [], "module": [], "layer": [], "op": []}
    ops: dict[str, list[Any]] = {"event_id": [], "module": [], "layer": []}
    for _, rows in groupby(timeline, key=lambda r: (r[0], r[1])):
        stacks: dict[str, list[_Frame]] = {"ann": [], "nn": [], "op": []}
        for _p, _t, ts, _neg, _order, kind, name, eid, dur in rows:
            for stack in stacks.values():
                while stack and stack[-1].end <= ts and not (dur == 0 and stack[-1].end == ts):
                    stack.pop()
            if kind == "point":
                module, layer = _current_module(stacks["ann"], stacks["nn"])
                points["event_id"].append(eid)
                points["module"].append(module)
                points["layer"].append(layer)
                points["op"].append(stacks["op"][-1].name if stacks["op"] else None)
                continue
            if kind == "op" and not stacks["op"]:
                module, layer = _current_module(stacks["ann"], stacks["nn"])
                ops["event_id"].append(eid)
                ops["module"].append(module)
                ops["layer"].append(layer)
            stacks[kind].append(_Frame(ts + dur, name))
    schema = {"event_id": pa.int64(), "module": pa.string(), "layer": pa.int32(), "op": pa.string()}
    as_table = lambda cols: pa.table({k: pa.array(v, schema[k]) for k, v in cols.items()})  # noqa: E731
    return as_table(points), as_table(ops)


_INSERT = """
    INSERT INTO profile_attribution
        (profile_id, event_id, kind, name, dur_ns, op_name, module, layer, reason)
    SELECT $pid, k.event_id, 'kernel', k.name, k.dur_ns, coalesce(k.ext_op, p.op),
           CASE WHEN NOT k.graph THEN p.module END, CASE WHEN NOT k.graph THEN p.layer END,
           CASE WHEN k.graph THEN 'CUDA graph replay (' || k.n_corr
                    || ' kernels share correlation ' || k.correlation || ')'
                WHEN k.ats IS NULL THEN 'no launch event (correlation '
                    || coalesce(CAST(k.correlation AS VARCHAR), 'none') || ')'
                WHEN p.module IS NULL THEN 'launched outside any module annotation' END
    FROM _attr_k k LEFT JOIN _attr_points p USING (event_id);
    INSERT INTO profile_attribution
        (profile_id, event_id, kind, name, dur_ns, op_name, module, layer, reason)
    SELECT $pid, e.event_id, 'cpu_op', e.name, e.dur_ns, e.name, o.module, o.layer,
           CASE WHEN o.module IS NULL THEN 'outside any module annotation' END
    FROM _attr_ops o JOIN profile_events e ON e.profile_id = $pid AND e.event_id = o.event_id;
"""


def attribute(cur: duckdb.DuckDBPyConnection, profile_id: str) -> int:
    """Fill ``profile_attribution`` for one profile; returns the number of rows written."""
    cur.execute("DELETE FROM profile_attribution WHERE profile_id = ?", [profile_id])
    _kernel_table(cur, profile_id)
    points, ops = _sweep(_timeline(cur, profile_id))
    cur.register("_attr_points", points)
    cur.register("_attr_ops", ops)
    try:
        for statement in _INSERT.split(";"):
            if statement.strip():
                cur.execute(statement, {"pid": profile_id})
    finally:
        cur.unregister("_attr_points")
        cur.unregister("_attr_ops")
        cur.execute("DROP TABLE IF EXISTS _attr_k")
    row = cur.execute(
        "SELECT count(*) FROM profile_attribution WHERE profile_id = ?", [profile_id]
    ).fetchone()
    return int(row[0])
