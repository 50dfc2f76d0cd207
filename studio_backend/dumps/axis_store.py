"""Token axes in the workspace: decided at ingest (``assign``), overridden by users.

``dump_axes`` holds one row per stitched tensor; statistics are computed on the view it names.
When a run's batch-first evidence changes (a streamed dump's embedding arrives late) or an
override is set, the affected axes are decided again and their statistics dropped, so the next
``compute_stats`` redoes them: no statistic outlives the axis it was computed on.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa

from studio_backend.dumps import axis as ax
from studio_backend.errors import InputError, StudioError
from studio_backend.workspace import Workspace

_INT = ("int", "uint", "bool")


def _is_int(dtype: str) -> bool:
    return str(dtype).startswith(_INT)


def run_facts(ws: Workspace, run_id: str) -> tuple[ax.RunFacts, bool]:
    """The run's facts for the rules, and whether its batch evidence changed since last time."""
    cur = ws.cursor()
    row = cur.execute(
        "SELECT format, model_config FROM dump_runs WHERE run_id = ?", [run_id]
    ).fetchone()
    if row is None:
        raise StudioError(f"no dump run {run_id!r} in this workspace")
    fmt, raw_cfg = row
    cfg = json.loads(raw_cfg) if isinstance(raw_cfg, str) else raw_cfg
    rows = cur.execute(
        "SELECT module, io, idx, arg_name, shape FROM dump_tensors WHERE run_id = ? "  # noqa: S608
        f"AND rank IS NULL AND part IS NULL AND {ax.EVIDENCE_SQL} ORDER BY step, module, io, idx",
        [run_id],
    ).fetchall()
    batched, why = (
        (False, f"{fmt} dumps are flat") if fmt in ax.FLAT_FORMATS else ax.batch_evidence(rows)
    )
    old = cur.execute("SELECT batched FROM dump_axis_runs WHERE run_id = ?", [run_id]).fetchone()
    changed = old is not None and old[0] != batched
    return ax.RunFacts.from_config(
        fmt, cfg if isinstance(cfg, dict) else None, batched, why
    ), changed


def overrides(ws: Workspace, run_id: str) -> list[tuple[str, int]]:
    """(module regex, token_dims) of a run, oldest first (later ones win)."""
    return [
        (r, int(k))
        for r, k in ws.cursor()
        .execute(
            "SELECT module_regex, token_dims FROM dump_axis_overrides WHERE run_id = ? "
            "ORDER BY created_at, module_regex",
            [run_id],
        )
        .fetchall()
    ]


def axis_for(facts: ax.TensorFacts, run: ax.RunFacts, overrides_: list[tuple[str, int]]) -> ax.Axis:
    """Override (the last matching one that fits the tensor's rank) or the rule table."""
    for regex, k in reversed(overrides_):
        if re.search(regex, facts.module) and 0 <= k <= len(facts.shape):
            return ax.overridden(facts.shape, k, regex, facts.module)
    return ax.decide(facts, run)


def _facts(module: str, io: str, arg: Any, dtype: str, shape: Any) -> ax.TensorFacts:
    return ax.TensorFacts(tuple(int(s) for s in shape), _is_int(dtype), module, io, arg)


def assign(ws: Workspace, run_id: str) -> int:
    """Decide the axis of every stitched tensor of the run that has none; returns how many.

    If the run's batch-first evidence changed, every non-override axis is decided again and
    the statistics of tensors whose axis moved are dropped (recomputed by ``compute_stats``).
    """
    run, changed = run_facts(ws, run_id)
    ov = overrides(ws, run_id)
    cur = ws.cursor()
    only_new = "" if changed else "AND a.tensor_id IS NULL"
    rows = cur.execute(
        "SELECT t.tensor_id, t.module, t.io, t.arg_name, t.dtype, t.shape, a.token_dims "  # noqa: S608
        "FROM dump_tensors t LEFT JOIN dump_axes a USING (tensor_id) "
        f"WHERE t.run_id = ? AND t.rank IS NULL {only_new} AND coalesce(a.source, '') <> 'override'",
        [run_id],
    ).fetchall()
    new, moved = [], []
    for tid, module, io, arg, dtype, shape, old_k in rows:
        a = axis_for(_facts(module, io, arg, dtype, shape), run, ov)
        new.append((tid, a.token_dims, a.layout, a.source, a.reason))
        if old_k is not None and old_k != a.token_dims:
            moved.append(tid)
    with ws.transaction() as w:
        w.execute(
            "INSERT OR REPLACE INTO dump_axis_runs VALUES (?, ?, ?)",
            [run_id, run.batched, run.batched_reason],
        )
        _put_axes(w, new)
        _drop_stats(w, moved)
    return len(new)


def _put_axes(w, rows: list[tuple]) -> None:  # noqa: ANN001 - a DuckDB cursor
    """Insert or replace axis rows in one statement (executemany is row by row: slow)."""
    if not rows:
        return
    cols = ["tensor_id", "token_dims", "layout", "source", "reason"]
    w.register("_new_axes", pa.Table.from_pylist([dict(zip(cols, r, strict=True)) for r in rows]))
    try:
        w.execute("INSERT OR REPLACE INTO dump_axes BY NAME SELECT * FROM _new_axes")
    finally:
        w.unregister("_new_axes")


def _drop_stats(w, ids: list[int]) -> None:  # noqa: ANN001 - a DuckDB cursor
    if ids:
        w.execute("DELETE FROM dump_stats WHERE list_contains(?, tensor_id)", [ids])
        w.execute("DELETE FROM dump_outliers WHERE list_contains(?, tensor_id)", [ids])


def set_override(
    ws: Workspace, run_id: str, module_regex: str, token_dims: int | None
) -> dict[str, int]:
    """Set (or with ``None`` clear) the token axis of the run's modules matching the regex.

    Tensors with fewer dims than ``token_dims`` keep their rule-decided axis (counted as
    skipped). Statistics of the changed tensors are dropped; returns counts.
    """
    try:
        re.compile(module_regex)
    except re.error as exc:
        raise InputError(module_regex, f"not a valid regular expression ({exc})") from None
    if token_dims is not None and token_dims < 0:
        raise InputError(
            f"token dims {token_dims}", "must be 0 or more (leading dims that index tokens)"
        )
    run, _changed = run_facts(ws, run_id)
    cur = ws.cursor()
    rows = cur.execute(
        "SELECT t.tensor_id, t.module, t.io, t.arg_name, t.dtype, t.shape, a.token_dims "
        "FROM dump_tensors t LEFT JOIN dump_axes a USING (tensor_id) "
        "WHERE t.run_id = ? AND t.rank IS NULL AND regexp_matches(t.module, ?)",
        [run_id, module_regex],
    ).fetchall()
    if not rows:
        raise InputError(module_regex, f"matches no tensor of run {run_id}")
    with ws.transaction() as w:
        w.execute(
            "DELETE FROM dump_axis_overrides WHERE run_id = ? AND module_regex = ?",
            [run_id, module_regex],
        )
        if token_dims is not None:
            w.execute(
                "INSERT INTO dump_axis_overrides (run_id, module_regex, token_dims) VALUES (?, ?, ?)",
                [run_id, module_regex, int(token_dims)],
            )
    ov = overrides(ws, run_id)
    new, moved, skipped = [], [], 0
    for tid, module, io, arg, dtype, shape, old_k in rows:
        a = axis_for(_facts(module, io, arg, dtype, shape), run, ov)
        if token_dims is not None and a.source != "override":
            skipped += 1
        new.append((tid, a.token_dims, a.layout, a.source, a.reason))
        if old_k != a.token_dims:
            moved.append(tid)
    with ws.transaction() as w:
        _put_axes(w, new)
        _drop_stats(w, moved)
    return {"tensors": len(rows), "changed": len(moved), "skipped": skipped}


def get(ws: Workspace, tensor_id: int) -> ax.Axis:
    """The axis of one tensor: stored, else decided now (rank tensors, runs not yet assigned)."""
    cur = ws.cursor()
    row = cur.execute(
        "SELECT token_dims, layout, source, reason FROM dump_axes WHERE tensor_id = ?",
        [int(tensor_id)],
    ).fetchone()
    if row is not None:
        return ax.Axis(int(row[0]), row[1], row[2], row[3] or "")
    t = cur.execute(
        "SELECT run_id, module, io, arg_name, dtype, shape FROM dump_tensors WHERE tensor_id = ?",
        [int(tensor_id)],
    ).fetchone()
    if t is None:
        raise StudioError(f"no dump tensor with id {tensor_id}")
    run, _changed = run_facts(ws, t[0])
    return axis_for(_facts(*t[1:]), run, overrides(ws, t[0]))


def restat(ws: Workspace, run_id: str) -> int:
    """Compute the statistics the run's stitched tensors lack (after an override): in-process,
    from the workspace alone (no dump folder needed beyond the tensors it references)."""
    from studio_backend.dumps.ingest import stats_of, write_stats

    assign(ws, run_id)
    todo = (
        ws.cursor()
        .execute(
            "SELECT t.tensor_id, t.store_group, t.store_name, t.source_file, a.token_dims "
            "FROM dump_tensors t LEFT JOIN dump_axes a USING (tensor_id) "
            "LEFT JOIN dump_stats s USING (tensor_id) WHERE t.run_id = ? AND t.rank IS NULL "
            "AND t.part IS NULL AND s.tensor_id IS NULL ORDER BY t.tensor_id",
            [run_id],
        )
        .fetchall()
    )
    root = ws.tensors.root
    results = [
        stats_of(str(root), str(ws.tensors.path(g).relative_to(root)) if g else None, n, src, k)
        for _, g, n, src, k in todo
    ]
    if todo:
        write_stats(ws, [t[0] for t in todo], results)
    return len(todo)
