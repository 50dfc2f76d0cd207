"""Read API over ingested dumps (the only way other areas reach dump tensors).

``find_tensors`` returns rows of ``dump_tensors``; ``load_tensor`` returns the tensor itself,
memory-mapped from the safetensors store (stitched tensors) or from the dump file (rank tensors).
"""

from __future__ import annotations

import pandas as pd
import torch

from studio_backend.dumps.formats.common import load_source
from studio_backend.errors import InputError, StudioError
from studio_backend.workspace import Workspace


def list_runs(ws: Workspace) -> pd.DataFrame:
    """Every dump run with its tensor counts (rank files and stitched tensors)."""
    return (
        ws.cursor()
        .execute(
            """
        SELECT r.run_id, r.name, r.root, r.format, r.tp_size, r.model_config, r.created_at,
               r.status,
               count(t.tensor_id) FILTER (WHERE t.rank IS NOT NULL) AS rank_tensors,
               count(t.tensor_id) FILTER (WHERE t.rank IS NULL) AS stitched_tensors,
               count(DISTINCT t.step) AS steps
        FROM dump_runs r LEFT JOIN dump_tensors t USING (run_id)
        GROUP BY ALL ORDER BY r.created_at DESC, r.run_id
        """
        )
        .df()
    )


def find_tensors(
    ws: Workspace,
    run_id: str,
    *,
    step: int | None = None,
    module_regex: str | None = None,
    io: str | None = None,
    stitched: bool = True,
) -> pd.DataFrame:
    """Rows of ``dump_tensors`` for a run; ``stitched=False`` gives the per-rank tensors."""
    where = ["run_id = ?", "rank IS NULL" if stitched else "rank IS NOT NULL"]
    params: list[object] = [run_id]
    if step is not None:
        where.append("step = ?")
        params.append(int(step))
    if module_regex:
        where.append("regexp_matches(module, ?)")
        params.append(module_regex)
    if io is not None:
        if io not in ("input", "output"):
            raise InputError(io, "io must be 'input' or 'output'")
        where.append("io = ?")
        params.append(io)
    # every fragment of ``where`` is a constant; values travel as parameters
    sql = (
        "SELECT * FROM dump_tensors WHERE "  # noqa: S608
        + " AND ".join(where)
        + " ORDER BY step, layer NULLS FIRST, module, io, idx, rank NULLS FIRST, part NULLS FIRST"
    )
    return ws.cursor().execute(sql, params).df()


def load_tensor(ws: Workspace, tensor_id: int) -> torch.Tensor:
    """One tensor by id, memory-mapped (dtype kept: bf16 stays bf16)."""
    row = (
        ws.cursor()
        .execute(
            "SELECT store_group, store_name, source_file, c.run_id IS NOT NULL FROM dump_tensors "
            "LEFT JOIN dump_cluster_runs c USING (run_id) WHERE tensor_id = ?",
            [int(tensor_id)],
        )
        .fetchone()
    )
    if row is None:
        raise StudioError(f"no dump tensor with id {tensor_id}")
    group, name, source, on_cluster = row
    if on_cluster:  # ingested with --ray: the file is on the node that holds it
        from studio_backend.dumps.cluster import where

        return where.load(ws, tensor_id)
    if group is not None:
        return ws.tensors.get(group, name)
    if source is None:
        raise StudioError(f"dump tensor {tensor_id} has neither a store entry nor a source file")
    return load_source(source)


def run_info(ws: Workspace, run_id: str) -> dict[str, object]:
    """One run's row as a dict (raises if unknown)."""
    df = ws.cursor().execute("SELECT * FROM dump_runs WHERE run_id = ?", [run_id]).df()
    if df.empty:
        raise StudioError(f"no dump run {run_id!r} in this workspace")
    return df.iloc[0].to_dict()


def ranks(ws: Workspace, run_id: str) -> pd.DataFrame:
    """A run's ranks with their folders and how many files each holds."""
    return (
        ws.cursor()
        .execute(
            """
        SELECT r.rank, r.folder, r.device, r.pid, count(t.tensor_id) AS files,
               coalesce(sum(t.nbytes), 0) AS bytes, count(DISTINCT t.step) AS steps
        FROM dump_ranks r LEFT JOIN dump_tensors t ON t.run_id = r.run_id AND t.rank = r.rank
        WHERE r.run_id = ? GROUP BY ALL ORDER BY r.rank
        """,
            [run_id],
        )
        .df()
    )


def steps(ws: Workspace, run_id: str) -> list[int]:
    rows = (
        ws.cursor()
        .execute("SELECT DISTINCT step FROM dump_tensors WHERE run_id = ? ORDER BY step", [run_id])
        .fetchall()
    )
    return [int(r[0]) for r in rows]


VERDICT_ORDER = ("failed", "unknown", "assumed", "verified")


def stitch_report(ws: Workspace, run_id: str, step: int | None = None) -> pd.DataFrame:
    """Every stitched (or refused) tensor with its rule, ranks, verdict and max abs diff."""
    sql = (
        "SELECT step, module, io, idx, verdict, rule, max_abs_diff, ranks, detail, module_class, "
        "rule_source, tensor_id FROM dump_stitch_report WHERE run_id = ?"
    )
    params: list[object] = [run_id]
    if step is not None:
        sql += " AND step = ?"
        params.append(int(step))
    return ws.cursor().execute(sql + " ORDER BY step, module, io, idx", params).df()


def module_tree(ws: Workspace, run_id: str, step: int) -> pd.DataFrame:
    """One row per module of a step: class, layer, tensors, worst stitch verdict, max |x|."""
    return (
        ws.cursor()
        .execute(
            """
        SELECT r.module, any_value(r.module_class) AS module_class, any_value(m.layer) AS layer,
               any_value(m.kind) AS kind, count(*) AS tensors,
               CASE min(CASE r.verdict WHEN 'failed' THEN 0 WHEN 'unknown' THEN 1
                                       WHEN 'assumed' THEN 2 ELSE 3 END)
                    WHEN 0 THEN 'failed' WHEN 1 THEN 'unknown' WHEN 2 THEN 'assumed'
                    ELSE 'verified' END AS verdict,
               max(s.absmax) AS absmax
        FROM dump_stitch_report r
        LEFT JOIN dump_modules m ON m.run_id = r.run_id AND m.module = r.module
        LEFT JOIN dump_stats s ON s.tensor_id = r.tensor_id
        WHERE r.run_id = ? AND r.step = ?
        GROUP BY r.module ORDER BY layer NULLS FIRST, r.module
        """,
            [run_id, int(step)],
        )
        .df()
    )


def ingest_errors(ws: Workspace, run_id: str | None = None) -> pd.DataFrame:
    """Ingest errors (newest first): the file, the kind of problem and what is wrong."""
    sql = 'SELECT kind, message, path, "at", run_id FROM dump_ingest_errors'
    params: list[object] = []
    if run_id is not None:
        sql += " WHERE run_id = ?"
        params.append(run_id)
    return ws.cursor().execute(sql + " ORDER BY id DESC", params).df()


def referenced_in_dump(ws: Workspace, run_id: str) -> tuple[int, int]:
    """(count, bytes) of the run's stitched tensors read from its dump files (not packed)."""
    n, nbytes = (
        ws.cursor()
        .execute(
            "SELECT count(*), coalesce(sum(nbytes), 0) FROM dump_tensors WHERE run_id = ? "
            "AND rank IS NULL AND store_group IS NULL AND source_file IS NOT NULL",
            [run_id],
        )
        .fetchone()
    )
    return int(n), int(nbytes)


def shared_modules(ws: Workspace, run_id: str) -> pd.DataFrame:
    """Modules flagged as shared (alias, one object for every layer, in place) with evidence."""
    return (
        ws.cursor()
        .execute(
            "SELECT module, kind, also, evidence, detail FROM dump_shared_modules "
            "WHERE run_id = ? ORDER BY module, kind",
            [run_id],
        )
        .df()
    )


def rank_comparison(
    ws: Workspace, run_id: str, step: int, module: str, io: str, idx: int
) -> pd.DataFrame:
    """The per-rank tensors of one (step, module, io, idx), compared with the lowest rank.

    What a failed stitch offers instead of a stitched tensor: each rank's dump as it is, its
    magnitude and how far it is from the lowest rank (None where the shapes differ).
    """
    rows = (
        ws.cursor()
        .execute(
            "SELECT tensor_id, rank, dtype, shape, source_file FROM dump_tensors WHERE run_id = ? "
            "AND step = ? AND module = ? AND io = ? AND idx = ? AND rank IS NOT NULL "
            "ORDER BY rank",
            [run_id, int(step), module, io, int(idx)],
        )
        .fetchall()
    )
    out, first = [], None
    for tid, rank, dtype, shape, src in rows:
        t = load_tensor(ws, int(tid))
        f = t.float() if t.is_floating_point() else t.to(torch.float64)
        if first is None:
            first = f
        diff = float((f - first).abs().max()) if f.shape == first.shape and f.numel() else None
        out.append({
            "rank": int(rank), "dtype": dtype, "shape": list(shape),
            "absmax": float(f.abs().max()) if f.numel() else 0.0,
            "mean": float(f.mean()) if f.numel() else 0.0,
            "max_abs_diff_vs_first_rank": diff, "tensor_id": int(tid), "file": src,
        })  # fmt: skip
    return pd.DataFrame(out)


def tool_stats(
    ws: Workspace, run_id: str, *, step: int | None = None, module_regex: str | None = None
) -> pd.DataFrame:
    """Statistics the dump tool wrote itself (msprobe dump.json Max/Min/Mean/Norm, msit
    statistics.csv), one row per tensor: all a statistics-only dump holds. ``absmax`` is
    max(|Max|, |Min|)."""
    where, params = ["run_id = ?"], [run_id]
    if step is not None:
        where.append("step = ?")
        params.append(int(step))
    if module_regex:
        where.append("regexp_matches(module, ?)")
        params.append(module_regex)
    sql = (
        "SELECT step, rank, module, module_class, io, idx, arg_name, dtype, shape, "  # noqa: S608
        "max, min, mean, l2 AS norm, greatest(abs(max), abs(min)) AS absmax, source_file "
        "FROM dump_tool_stats WHERE " + " AND ".join(where) + " "
        "ORDER BY step, rank NULLS FIRST, module, io, idx, arg_name NULLS FIRST"
    )
    return ws.cursor().execute(sql, params).df()


def axes(ws: Workspace, run_id: str) -> pd.DataFrame:
    """The token axis of each stitched tensor (``studio_backend/dumps/axis.py``): tensor_id,
    token_dims, layout, source ('format', 'module', 'config', 'shape', 'override'), reason."""
    return (
        ws.cursor()
        .execute(
            "SELECT a.* FROM dump_axes a JOIN dump_tensors t USING (tensor_id) "
            "WHERE t.run_id = ? ORDER BY a.tensor_id",
            [run_id],
        )
        .df()
    )
