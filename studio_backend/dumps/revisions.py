"""Undo what the workspace holds for a run when what it was built from changed (issue 17).

Two cases: a rank file rewritten after it was ingested (its rank rows, and every stitched tensor
and statistic made from it, are replaced, never duplicated), and a run whose expected tp changed
(a late rank folder in watch mode, or a rerun that now knows the tp): everything stitched at the
old tp is dropped and stitched again. Rank tensors and their files are kept.
"""

from __future__ import annotations

from studio_backend.dumps import run_checks
from studio_backend.workspace import Workspace

_KEY_SQL = (
    "run_id || '|' || step || '|' || module || '|' || io || '|' || idx || '|' "
    "|| coalesce(arg_name, '') || '|' || coalesce(call_index, 0)"
)
# error kinds that a fresh stitch recomputes (kept otherwise: file problems stay reported)
STITCH_ERRORS = ("missing_rank", "shape_mismatch", "stitch_failed", "unknown_class")


def stored_tp(ws: Workspace, run_id: str) -> int | None:
    row = ws.cursor().execute("SELECT tp_size FROM dump_runs WHERE run_id = ?", [run_id]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def reset_stitched(ws: Workspace, run_id: str) -> int:
    """Drop every stitch of the run (reports, stitched tensors, statistics, store files, stitch
    errors, shared-module flags) so that the next stitch starts over. Returns reports dropped."""
    keys = [
        k
        for (k,) in ws.cursor()
        .execute("SELECT stitch_key FROM dump_stitch_report WHERE run_id = ?", [run_id])
        .fetchall()
    ]
    _drop_keys(ws, run_id, keys)
    with ws.transaction() as w:
        w.execute("DELETE FROM dump_shared_modules WHERE run_id = ?", [run_id])
        w.execute(
            "DELETE FROM dump_ingest_errors WHERE run_id = ? AND list_contains(?, kind)",
            [run_id, list(STITCH_ERRORS)],
        )
    return len(keys)


def forget_sources(ws: Workspace, run_id: str, files: list[str], keys: list[str]) -> int:
    """Forget the rank tensors read from ``files`` (rewritten since) and every stitch made from
    them or of their tensors (``keys``: a stitch that failed for want of this file); the new
    content is catalogued and stitched afresh. Returns rank rows dropped."""
    _drop_keys(ws, run_id, sorted(set(keys)))
    if not files:
        return 0
    cur = ws.cursor()
    rows = cur.execute(
        f"SELECT tensor_id, {_KEY_SQL} FROM dump_tensors WHERE run_id = ? AND rank IS NOT NULL "  # noqa: S608 - constant SQL
        "AND (list_contains(?, source_file) OR list_contains(?, split_part(source_file, "
        "'#member=', 1)))",
        [run_id, files, files],
    ).fetchall()
    if not rows:
        return 0
    ids = [r[0] for r in rows]
    _drop_keys(ws, run_id, sorted({r[1] for r in rows}))
    with ws.transaction() as w:
        for table in ("dump_stats", "dump_outliers", "dump_axes", "dump_tensors"):
            w.execute(f"DELETE FROM {table} WHERE tensor_id IN (SELECT unnest(?::BIGINT[]))", [ids])  # noqa: S608 - constant table names
    return len(ids)


def _drop_keys(ws: Workspace, run_id: str, keys: list[str]) -> None:
    if not keys:
        return
    run_checks.drop_stitched(ws, run_id, keys)  # stitched tensor, parts, statistics, store file
    # the error rows of those stitches start "<module> step <step> <io>[<idx>]:" (ingest.py)
    prefixes = []
    for k in keys:
        _run, step, module, io, idx, *_rest = k.split("|")
        prefixes.append(f"{module} step {step} {io}[{idx}]:")
    with ws.transaction() as w:
        w.execute(
            "DELETE FROM dump_stitch_report WHERE run_id = ? AND list_contains(?, stitch_key)",
            [run_id, keys],
        )
        w.execute(
            "DELETE FROM dump_ingest_errors WHERE run_id = ? AND list_contains(?, kind) AND "
            "list_contains(?, split_part(message, ':', 1) || ':')",
            [run_id, list(STITCH_ERRORS), prefixes],
        )
