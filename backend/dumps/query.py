"""Read API over ingested dumps (the only way other areas reach dump tensors).

``find_tensors`` returns rows of ``dump_tensors``; ``load_tensor`` returns the tensor itself,
memory-mapped from the safetensors store (stitched tensors) or from the dump file (rank tensors).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from backend.dumps.formats.common import load_tensor_file
from backend.errors import InputError, StudioError
from backend.workspace import Workspace


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
            "SELECT store_group, store_name, source_file FROM dump_tensors WHERE tensor_id = ?",
            [int(tensor_id)],
        )
        .fetchone()
    )
    if row is None:
        raise StudioError(f"no dump tensor with id {tensor_id}")
    group, name, source = row
    if group is not None:
        return ws.tensors.get(group, name)
    if source is None:
        raise StudioError(f"dump tensor {tensor_id} has neither a store entry nor a source file")
    return load_tensor_file(Path(source))


def run_info(ws: Workspace, run_id: str) -> dict[str, object]:
    """One run's row as a dict (raises if unknown)."""
    df = ws.cursor().execute("SELECT * FROM dump_runs WHERE run_id = ?", [run_id]).df()
    if df.empty:
        raise StudioError(f"no dump run {run_id!r} in this workspace")
    return df.iloc[0].to_dict()
