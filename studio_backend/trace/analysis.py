"""Profile analyses in SQL: top kernels/ops, families, attribution, per-layer time, diffs.

Every function reads the workspace and returns a pandas DataFrame; times are microseconds.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from studio_backend.errors import InputError, StudioError
from studio_backend.trace.attribution import DEVICE_CATS, UNATTRIBUTED
from studio_backend.trace.families import family_sql
from studio_backend.trace.self_time import HOST_CATS, host_self_times
from studio_backend.workspace import Workspace

_DEVICE = ", ".join(f"'{c}'" for c in DEVICE_CATS)
_HOST = ", ".join(f"'{c}'" for c in HOST_CATS)


def list_profiles(ws: Workspace) -> pd.DataFrame:
    return (
        ws.cursor()
        .execute(
            "SELECT profile_id, name, format, n_events, bad_events, has_device, source, created_at "
            "FROM profiles ORDER BY created_at, profile_id"
        )
        .df()
    )


def profile_info(ws: Workspace, profile_id: str) -> dict:
    row = (
        ws.cursor()
        .execute(
            "SELECT profile_id, name, format, n_events, has_device, source FROM profiles "
            "WHERE profile_id = ?",
            [profile_id],
        )
        .fetchone()
    )
    if row is None:
        raise InputError(profile_id, "no such profile in the workspace (see `studio profile list`)")
    keys = ("profile_id", "name", "format", "n_events", "has_device", "source")
    return dict(zip(keys, row, strict=True))


KINDS = ("auto", "kernel", "cpu_op", "cpu")


def _kind_filter(ws: Workspace, profile_id: str, kind: str) -> str:
    """SQL filter for 'kernel' (device events), 'cpu_op', 'cpu' (every host event
    torch.profiler's key_averages lists: ops, record_function ranges, runtime launches) or
    'auto' (kernels when present, else cpu ops)."""
    if kind == "auto":
        kind = "kernel" if profile_info(ws, profile_id)["has_device"] else "cpu_op"
    if kind == "kernel":
        return f"ph = 'X' AND cat IN ({_DEVICE})"
    if kind == "cpu_op":
        return "ph = 'X' AND cat = 'cpu_op'"
    if kind == "cpu":
        return f"ph = 'X' AND cat IN ({_HOST})"
    raise InputError(kind, f"kind must be one of {', '.join(KINDS)}")


def _self_relation(cur, profile_id: str) -> str:
    """The relation holding the profile's self times: the stored table, or (a profile ingested
    before self times were stored) an in-memory table computed now on this cursor."""
    if cur.execute(
        "SELECT count(*) > 0 FROM profile_self_time WHERE profile_id = ?", [profile_id]
    ).fetchone()[0]:
        return "profile_self_time"
    if not hasattr(cur, "register"):  # read through the running studio: no temporary tables
        raise StudioError(
            f"profile {profile_id} was ingested before self times were stored; ingest it again "
            "(or stop the studio) to see this view from the command line"
        )
    host = host_self_times(cur, profile_id)
    sql = f"SELECT event_id, dur_ns AS self_ns FROM profile_events WHERE profile_id = ? AND ph = 'X' AND cat IN ({_DEVICE})"  # noqa: E501, S608 - constants
    device = cur.sql(sql, params=[profile_id]).to_arrow_table()
    table = pa.concat_tables([host, device.cast(host.schema)])
    cur.register(
        "_self_mem",
        table.append_column("profile_id", pa.array([profile_id] * len(table), pa.string())),
    )
    return "_self_mem"


def top(
    ws: Workspace,
    profile_id: str,
    *,
    kind: str = "auto",
    n: int | None = 20,
    by: str = "self",
) -> pd.DataFrame:
    """Kernels or ops by self time (``by="total"``: by total time): name, calls, self_us,
    total_us, avg_us (total per call), share (of the kind's summed self time).

    Self time follows torch.profiler (``key_averages().self_cpu_time_total``): an op's time
    minus its direct children's (studio_backend/trace/self_time.py); total time is inclusive; calls
    count torch's events (a call merged into a same-named parent is not counted twice). For
    kernels self = total = the duration.
    """
    if by not in ("self", "total"):
        raise InputError(by, "rank by 'self' or 'total'")
    where = _kind_filter(ws, profile_id, kind)
    limit = "" if n is None else f"LIMIT {int(n)}"
    cur = ws.cursor()
    rel = _self_relation(cur, profile_id)
    order = "self_us DESC, total_us DESC" if by == "self" else "total_us DESC, self_us DESC"
    return cur.execute(
        f"""
        SELECT e.name, count(*) AS calls, sum(s.self_ns) / 1e3 AS self_us,
               sum(e.dur_ns) / 1e3 AS total_us, avg(e.dur_ns) / 1e3 AS avg_us,
               sum(s.self_ns)
                   / sum(sum(s.self_ns)) OVER () AS share
        FROM profile_events e JOIN {rel} s
             ON s.profile_id = e.profile_id AND s.event_id = e.event_id
        WHERE e.profile_id = ? AND {where}
        GROUP BY e.name ORDER BY {order}, e.name {limit}
        """,  # noqa: S608
        [profile_id],
    ).df()


def families(
    ws: Workspace, profile_id: str, *, kind: str = "auto", table: list | None = None
) -> pd.DataFrame:
    """Time per family (regex table, first match wins): family, calls, total_us, share.

    The time summed is each event's self time (for kernels, their duration), so an op nested
    in another (aten::mm in aten::matmul in aten::linear) is not counted twice.
    """
    where = _kind_filter(ws, profile_id, kind)
    case, params = family_sql("e.name", table)
    cur = ws.cursor()
    rel = _self_relation(cur, profile_id)
    return cur.execute(
        f"""
        SELECT family, count(*) AS calls, sum(self_ns) / 1e3 AS total_us,
               sum(self_ns) / sum(sum(self_ns)) OVER () AS share
        FROM (SELECT {case} AS family, s.self_ns FROM profile_events e JOIN {rel} s
                  ON s.profile_id = e.profile_id AND s.event_id = e.event_id
              WHERE e.profile_id = ? AND {where})
        GROUP BY family ORDER BY total_us DESC, family
        """,  # noqa: S608
        [*params, profile_id],
    ).df()


def _attr_kind(ws: Workspace, profile_id: str, kind: str) -> str:
    if kind == "cpu":
        raise InputError(kind, "kind 'cpu' (every host event) applies to the top table only")
    if kind == "auto":
        return "kernel" if profile_info(ws, profile_id)["has_device"] else "cpu_op"
    return kind


def attribution(ws: Workspace, profile_id: str, *, kind: str = "auto") -> pd.DataFrame:
    """Per kernel/op row: name, op_name, module ('unattributed' bucket), layer, dur_us, reason."""
    return (
        ws.cursor()
        .execute(
            f"""
        SELECT event_id, name, op_name, coalesce(module, '{UNATTRIBUTED}') AS module, layer,
               dur_ns / 1e3 AS dur_us, reason
        FROM profile_attribution WHERE profile_id = ? AND kind = ?
        ORDER BY event_id
        """,  # noqa: S608
            [profile_id, _attr_kind(ws, profile_id, kind)],
        )
        .df()
    )


def by_module(ws: Workspace, profile_id: str, *, kind: str = "auto") -> pd.DataFrame:
    """Time per module (innermost annotation), the 'unattributed' bucket included."""
    return (
        ws.cursor()
        .execute(
            f"""
        SELECT coalesce(module, '{UNATTRIBUTED}') AS module, min(layer) AS layer,
               count(*) AS calls, sum(dur_ns) / 1e3 AS total_us,
               sum(dur_ns) / sum(sum(dur_ns)) OVER () AS share
        FROM profile_attribution WHERE profile_id = ? AND kind = ?
        GROUP BY 1 ORDER BY total_us DESC, module
        """,  # noqa: S608
            [profile_id, _attr_kind(ws, profile_id, kind)],
        )
        .df()
    )


def per_layer(
    ws: Workspace, profile_id: str, *, kind: str = "auto", table: list | None = None
) -> pd.DataFrame:
    """Time per (layer, family): the heatmap's data. Rows outside layers have layer NULL."""
    case, params = family_sql("name", table)
    return (
        ws.cursor()
        .execute(
            f"""
        SELECT layer, family, count(*) AS calls, sum(dur_ns) / 1e3 AS total_us
        FROM (SELECT layer, {case} AS family, dur_ns FROM profile_attribution
              WHERE profile_id = ? AND kind = ?)
        GROUP BY ALL ORDER BY layer NULLS LAST, family
        """,  # noqa: S608
            [*params, profile_id, _attr_kind(ws, profile_id, kind)],
        )
        .df()
    )


def unattributed(ws: Workspace, profile_id: str, *, kind: str = "auto") -> pd.DataFrame:
    """The unattributed bucket by reason: reason, calls, total_us."""
    return (
        ws.cursor()
        .execute(
            """
        SELECT reason, count(*) AS calls, sum(dur_ns) / 1e3 AS total_us
        FROM profile_attribution WHERE profile_id = ? AND kind = ? AND module IS NULL
        GROUP BY reason ORDER BY total_us DESC
        """,
            [profile_id, _attr_kind(ws, profile_id, kind)],
        )
        .df()
    )
