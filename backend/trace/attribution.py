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

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import duckdb
import pyarrow as pa

from backend.trace.module_tracer import layer_of

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
UNATTRIBUTED = "unattributed"
NN_MODULE = "nn.Module: "


@dataclass
class _Frame:
    end: int
    name: str


def _kernels(cur: duckdb.DuckDBPyConnection, pid: str) -> list[tuple[Any, ...]]:
    """Device events with their launch anchor (pid, tid, ts) and External-id op name."""
    cats = ", ".join(f"'{c}'" for c in DEVICE_CATS)
    launch_cats = ", ".join(f"'{c}'" for c in LAUNCH_CATS)
    return cur.execute(
        f"""
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
        SELECT k.event_id, k.name, k.dur_ns, k.correlation, coalesce(per_corr.n, 0),
               launch.name, coalesce(launch.pid, flow.pid), coalesce(launch.tid, flow.tid),
               coalesce(launch.ts_ns, flow.ts_ns), ops.name
        FROM k
        LEFT JOIN per_corr USING (correlation)
        LEFT JOIN launch USING (correlation)
        LEFT JOIN flow ON flow.fpid = k.pid AND flow.ftid = k.tid AND flow.fts = k.ts_ns
        LEFT JOIN ops ON ops.external_id = k.external_id
        ORDER BY k.event_id
        """,  # noqa: S608
        {"pid": pid},
    ).fetchall()


def _host_intervals(cur: duckdb.DuckDBPyConnection, pid: str) -> list[tuple[Any, ...]]:
    """Host intervals that can enclose a launch: annotations, nn.Module frames, cpu ops."""
    return cur.execute(
        """
        SELECT pid, tid, ts_ns, ts_ns + dur_ns AS end_ns,
               CASE WHEN cat = 'cpu_op' THEN 'op'
                    WHEN cat = 'python_function' THEN 'nn' ELSE 'ann' END AS kind,
               name, event_id, dur_ns
        FROM profile_events
        WHERE profile_id = $pid AND ph = 'X' AND (
            cat = 'cpu_op'
            OR (cat IN ('user_annotation', 'nvtx') AND NOT starts_with(name, 'ProfilerStep#'))
            OR (cat = 'python_function' AND starts_with(name, $nn)))
        """,
        {"pid": pid, "nn": NN_MODULE},
    ).fetchall()


def _current_module(ann: list[_Frame], nn: list[_Frame]) -> tuple[str | None, int | None]:
    module = ann[-1].name if ann else (nn[-1].name.removeprefix(NN_MODULE) if nn else None)
    layer = None
    for frame in reversed(ann):
        layer = layer_of(frame.name)
        if layer is not None:
            break
    return module, layer


def _sweep(
    intervals: Iterable[tuple[Any, ...]], points: Iterable[tuple[Any, ...]]
) -> tuple[dict[int, tuple[str | None, int | None, str | None]], list[dict[str, Any]]]:
    """One pass per host thread in time order with a stack per kind of interval.

    Returns the (module, layer, innermost op) around each point and the top-level cpu ops with
    their module and layer.
    """
    # Sort key: thread, start, longer first (parents before children), intervals before points.
    items: list[tuple[Any, ...]] = [
        (str(p), str(t), ts, -(end - ts), 0, kind, name, eid, end - ts)
        for p, t, ts, end, kind, name, eid, _ in intervals
    ]
    items += [(str(p), str(t), ts, 0, 1, "point", None, key, 0) for p, t, ts, key in points]
    items.sort(key=lambda r: (r[0], r[1], r[2], r[3], r[4]))
    placed: dict[int, tuple[str | None, int | None, str | None]] = {}
    top_ops: list[dict[str, Any]] = []
    for _, rows in groupby(items, key=lambda r: (r[0], r[1])):
        stacks: dict[str, list[_Frame]] = {"ann": [], "nn": [], "op": []}
        for _p, _t, ts, _neg, _order, kind, name, eid, dur in rows:
            for stack in stacks.values():
                while stack and stack[-1].end <= ts and not (dur == 0 and stack[-1].end == ts):
                    stack.pop()
            module, layer = _current_module(stacks["ann"], stacks["nn"])
            if kind == "point":
                op = stacks["op"][-1].name if stacks["op"] else None
                placed[eid] = (module, layer, op)
                continue
            if kind == "op" and not stacks["op"]:
                top_ops.append(
                    {"event_id": eid, "name": name, "dur_ns": dur, "module": module, "layer": layer}
                )
            stacks[kind].append(_Frame(ts + dur, name))
    return placed, top_ops


def attribute(cur: duckdb.DuckDBPyConnection, profile_id: str) -> int:
    """Fill ``profile_attribution`` for one profile; returns the number of rows written."""
    kernels = _kernels(cur, profile_id)
    points = [(r[6], r[7], r[8], r[0]) for r in kernels if r[8] is not None]
    placed, top_ops = _sweep(_host_intervals(cur, profile_id), points)
    rows: list[dict[str, Any]] = []
    for eid, name, dur, corr, n_corr, launch_name, _p, _t, anchor_ts, ext_op in kernels:
        module = layer = op = reason = None
        graph = n_corr > 1 or (launch_name and "graphlaunch" in launch_name.lower())
        if graph:
            reason = f"CUDA graph replay ({n_corr} kernels share correlation {corr})"
        elif anchor_ts is None:
            reason = f"no launch event (correlation {corr})"
        else:
            module, layer, op = placed[eid]
            if module is None:
                reason = "launched outside any module annotation"
        rows.append(
            {"event_id": eid, "kind": "kernel", "name": name, "dur_ns": dur,
             "op_name": ext_op or op, "module": module, "layer": layer, "reason": reason}
        )  # fmt: skip
    for op in top_ops:
        rows.append(
            {**op, "kind": "cpu_op", "op_name": op["name"],
             "reason": None if op["module"] else "outside any module annotation"}
        )  # fmt: skip
    cur.execute("DELETE FROM profile_attribution WHERE profile_id = ?", [profile_id])
    if not rows:
        return 0
    table = pa.Table.from_pylist(
        [{"profile_id": profile_id, **r} for r in rows],
        schema=pa.schema(
            [
                ("profile_id", pa.string()),
                ("event_id", pa.int64()),
                ("kind", pa.string()),
                ("name", pa.string()),
                ("dur_ns", pa.int64()),
                ("op_name", pa.string()),
                ("module", pa.string()),
                ("layer", pa.int32()),
                ("reason", pa.string()),
            ]
        ),  # fmt: skip
    )
    cur.register("_attr_rows", table)
    try:
        cur.execute(
            "INSERT INTO profile_attribution (profile_id, event_id, kind, name, dur_ns, op_name,"
            " module, layer, reason) SELECT profile_id, event_id, kind, name, dur_ns, op_name,"
            " module, layer, reason FROM _attr_rows"
        )
    finally:
        cur.unregister("_attr_rows")
    return len(rows)
