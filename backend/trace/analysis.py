"""Profile analyses in SQL: top kernels/ops, families, attribution, per-layer time, diffs.

Every function reads the workspace and returns a pandas DataFrame; times are microseconds.
"""

from __future__ import annotations

import pandas as pd

from backend.errors import InputError
from backend.trace.attribution import DEVICE_CATS, UNATTRIBUTED
from backend.trace.families import family_sql
from backend.workspace import Workspace

_DEVICE = ", ".join(f"'{c}'" for c in DEVICE_CATS)


def list_profiles(ws: Workspace) -> pd.DataFrame:
    return (
        ws.cursor()
        .execute(
            "SELECT profile_id, name, format, n_events, has_device, source, created_at "
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


def _kind_filter(ws: Workspace, profile_id: str, kind: str) -> str:
    """SQL filter for 'kernel' (device events), 'cpu_op' or 'auto' (kernels when present)."""
    if kind == "auto":
        kind = "kernel" if profile_info(ws, profile_id)["has_device"] else "cpu_op"
    if kind == "kernel":
        return f"ph = 'X' AND cat IN ({_DEVICE})"
    if kind == "cpu_op":
        return "ph = 'X' AND cat = 'cpu_op'"
    raise InputError(kind, "kind must be 'kernel', 'cpu_op' or 'auto'")


def top(ws: Workspace, profile_id: str, *, kind: str = "auto", n: int | None = 20) -> pd.DataFrame:
    """Kernels (or ops) by total time: name, calls, total_us, avg_us, share of the kind's total.

    For cpu ops, times are inclusive (an op's time contains its children's).
    """
    where = _kind_filter(ws, profile_id, kind)
    limit = "" if n is None else f"LIMIT {int(n)}"
    return (
        ws.cursor()
        .execute(
            f"""
        SELECT name, count(*) AS calls, sum(dur_ns) / 1e3 AS total_us,
               avg(dur_ns) / 1e3 AS avg_us,
               sum(dur_ns) / sum(sum(dur_ns)) OVER () AS share
        FROM profile_events WHERE profile_id = ? AND {where}
        GROUP BY name ORDER BY total_us DESC, name {limit}
        """,  # noqa: S608
            [profile_id],
        )
        .df()
    )


def families(
    ws: Workspace, profile_id: str, *, kind: str = "auto", table: list | None = None
) -> pd.DataFrame:
    """Time per family (regex table, first match wins): family, calls, total_us, share."""
    where = _kind_filter(ws, profile_id, kind)
    case, params = family_sql("name", table)
    return (
        ws.cursor()
        .execute(
            f"""
        SELECT family, count(*) AS calls, sum(dur_ns) / 1e3 AS total_us,
               sum(dur_ns) / sum(sum(dur_ns)) OVER () AS share
        FROM (SELECT {case} AS family, dur_ns FROM profile_events
              WHERE profile_id = ? AND {where})
        GROUP BY family ORDER BY total_us DESC, family
        """,  # noqa: S608
            [*params, profile_id],
        )
        .df()
    )


def _attr_kind(ws: Workspace, profile_id: str, kind: str) -> str:
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
