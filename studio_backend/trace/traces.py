"""Stored module call traces: listing, call order per layer, counts per class (SQL)."""

from __future__ import annotations

import re

import pandas as pd

from studio_backend.workspace import Workspace


def list_traces(ws: Workspace) -> pd.DataFrame:
    return (
        ws.cursor()
        .execute(
            "SELECT trace_id, name, model, prompt, n_calls, created_at FROM trace_runs "
            "ORDER BY created_at, trace_id"
        )
        .df()
    )


_RANK = re.compile(r"\brank (\d+)")


def first_choice(names: list[str]) -> int:
    """The row a page opens on: the newest trace (or profile); when that is one rank of a
    multi-rank run, stored one row per rank and named ``... rank N ...``, its rank 0."""
    if not names:
        return 0
    last = names[-1]
    m = _RANK.search(last)
    if m is None:
        return len(names) - 1
    rank0 = f"{last[: m.start()]}rank 0{last[m.end() :]}"
    return max((i for i, n in enumerate(names) if n == rank0), default=len(names) - 1)


def layers(ws: Workspace, trace_id: str) -> list[int]:
    rows = (
        ws.cursor()
        .execute(
            "SELECT DISTINCT layer FROM trace_calls WHERE trace_id = ? AND layer IS NOT NULL "
            "ORDER BY layer",
            [trace_id],
        )
        .fetchall()
    )
    return [int(r[0]) for r in rows]


def calls(ws: Workspace, trace_id: str, layer: int | None = None) -> pd.DataFrame:
    """Calls in order (of one layer when given): seq, module, class, depth, shapes, wall_us."""
    where, params = "trace_id = ?", [trace_id]
    if layer is not None:
        where += " AND layer = ?"
        params.append(layer)
    return (
        ws.cursor()
        .execute(
            "SELECT seq, module, module_class, depth, in_shapes, out_shapes, in_dtypes, out_dtypes,"  # noqa: S608
            f" wall_us FROM trace_calls WHERE {where} ORDER BY rank NULLS FIRST, seq",  # noqa: S608
            params,
        )
        .df()
    )


def class_counts(ws: Workspace, trace_id: str) -> pd.DataFrame:
    """Calls and total wall time per module class, most called first."""
    return (
        ws.cursor()
        .execute(
            "SELECT module_class, count(*) AS calls, sum(wall_us) AS wall_us FROM trace_calls "
            "WHERE trace_id = ? GROUP BY module_class ORDER BY calls DESC, module_class",
            [trace_id],
        )
        .df()
    )
