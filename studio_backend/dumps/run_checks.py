"""Checks over a whole ingested run: shared-module flags, and removing failed stitches.

Kept out of ingest.py (the single writer calls these with its workspace): a failed stitch must
leave no stitched tensor behind, and shared modules must be flagged once all files are in.
"""

from __future__ import annotations

from collections.abc import Callable

from studio_backend.dumps.detect import DumpLayout
from studio_backend.dumps.formats.common import load_source
from studio_backend.dumps.stitch import shared
from studio_backend.workspace import Workspace


def flag_shared_modules(
    ws: Workspace,
    run_id: str,
    layout: DumpLayout,
    detect: Callable[[list, dict[str, str], dict[str, int]], list] | None = None,
) -> int:
    """Record the run's shared modules (stitch/shared.py) in ``dump_shared_modules``.

    ``detect(rows, tree, calls)`` runs the check where the files are (a Ray node); by default
    here, reading the lowest-rank files locally.
    """
    rows = [
        shared.Row(int(step), module, io, int(idx), src)
        for step, module, io, idx, src in ws.cursor().execute(
            "SELECT step, module, io, idx, arg_max(source_file, -rank) FROM dump_tensors "
            "WHERE run_id = ? AND rank IS NOT NULL AND source_file IS NOT NULL "
            "GROUP BY step, module, io, idx, arg_name, call_index "
            "HAVING arg_name IS NULL AND coalesce(call_index, 0) = 0",
            [run_id],
        ).fetchall()
    ]  # fmt: skip
    tree: dict[str, str] = {}  # module -> class: model_tree.json, msprobe names, the catalogue
    for rf in layout.folders.values():
        tree.update(rf.classes or {})
    tree.update(layout.extra.get("classes", {}) or {})
    calls: dict[str, int] = {}
    for module, cls, n in ws.cursor().execute(
        "SELECT module, any_value(module_class), max(coalesce(call_index, 0)) + 1 "
        "FROM dump_tensors WHERE run_id = ? AND rank IS NOT NULL GROUP BY module",
        [run_id],
    ).fetchall():  # fmt: skip
        calls[module] = int(n)
        if cls:
            tree.setdefault(module, cls)
    flags = detect(rows, tree, calls) if detect else shared.detect(rows, tree, load_source, calls)
    with ws.transaction() as cur:
        cur.execute("DELETE FROM dump_shared_modules WHERE run_id = ?", [run_id])
        if flags:
            cur.executemany(
                "INSERT OR REPLACE INTO dump_shared_modules VALUES (?, ?, ?, ?, ?, ?)",
                [[run_id, f.module, f.kind, f.also, f.evidence, f.detail] for f in flags],
            )
    return len(flags)


def drop_stitched(ws: Workspace, run_id: str, keys: list[str]) -> None:
    """Remove the stitched tensors of stitches that failed after they were stored (a partial
    sum whose parent check failed): row, statistics, outliers and store file. The rank tensors
    stay; exports, pages and analyses never see the removed tensor."""
    cur = ws.cursor()
    groups = set()
    with ws.transaction() as w:
        for key in keys:
            row = cur.execute(
                "SELECT t.tensor_id, t.store_group FROM dump_stitch_report r JOIN dump_tensors t "
                "USING (tensor_id) WHERE r.stitch_key = ?", [key],
            ).fetchone()  # fmt: skip
            if row is None:
                continue
            tid, group = row
            ids = [tid]
            if group is not None:  # the whole tensor and its parts share one group
                groups.add(group)
                ids = [i for (i,) in cur.execute(
                    "SELECT tensor_id FROM dump_tensors WHERE run_id = ? AND rank IS NULL "
                    "AND store_group = ?", [run_id, group]).fetchall()]  # fmt: skip
            for table in ("dump_stats", "dump_outliers", "dump_tensors"):
                w.execute(f"DELETE FROM {table} WHERE tensor_id IN (SELECT unnest(?::BIGINT[]))",  # noqa: S608 - constant table names
                          [ids])  # fmt: skip
            w.execute("UPDATE dump_stitch_report SET tensor_id = NULL WHERE stitch_key = ?", [key])
    for g in groups:
        ws.tensors.path(g).unlink(missing_ok=True)
