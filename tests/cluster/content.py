"""A run's whole workspace content, independent of tensor ids and timestamps (for equality)."""

from __future__ import annotations

from typing import Any

import numpy as np

from studio_backend.dumps import query

# tables keyed by tensor_id: the id is replaced by the tensor's natural key
BY_TENSOR = {
    "dump_stats": "s.* EXCLUDE (tensor_id)",
    "dump_outliers": "s.* EXCLUDE (tensor_id)",
    "dump_axes": "s.* EXCLUDE (tensor_id)",
}
BY_RUN = {
    "dump_runs": "* EXCLUDE (created_at)",
    "dump_ranks": "*",
    "dump_modules": "*",
    "dump_tool_stats": "*",
    "dump_ingest_files": "* EXCLUDE (ingested_at)",
    "dump_ingest_errors": '* EXCLUDE (id, "at")',
    "dump_axis_runs": "*",
    "dump_shared_modules": "*",
}
KEY = "t.step, t.module, t.io, t.idx, t.rank, t.part, t.arg_name, t.call_index"


def _rows(ws: Any, sql: str, params: list) -> list[tuple]:
    rows = ws.cursor().execute(sql, params).fetchall()
    return sorted((tuple(_plain(v) for v in r) for r in rows), key=repr)


def _plain(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_plain(x) for x in v)
    if isinstance(v, float) and v != v:
        return "nan"
    return v


def content(ws: Any, run_id: str) -> dict[str, list[tuple]]:
    """Every dump_* row of the run, tensor ids replaced by (step, module, io, idx, rank, part,
    arg, call) and row ids / timestamps left out."""
    out = {t: _rows(ws, f"SELECT {cols} FROM {t} WHERE run_id = ?", [run_id])  # noqa: S608
           for t, cols in BY_RUN.items()}  # fmt: skip
    out["dump_tensors"] = _rows(
        ws, "SELECT * EXCLUDE (tensor_id) FROM dump_tensors t WHERE run_id = ?", [run_id]
    )
    out["dump_stitch_report"] = _rows(
        ws,
        f"SELECT r.* EXCLUDE (tensor_id), {KEY} FROM dump_stitch_report r "  # noqa: S608
        "LEFT JOIN dump_tensors t USING (tensor_id) WHERE r.run_id = ?",
        [run_id],
    )
    for t, cols in BY_TENSOR.items():
        out[t] = _rows(
            ws,
            f"SELECT {cols}, {KEY} FROM {t} s JOIN dump_tensors t USING (tensor_id) "  # noqa: S608
            "WHERE t.run_id = ?",
            [run_id],
        )
    return out


def stitched(ws: Any, run_id: str) -> dict[tuple, np.ndarray]:
    """Every stitched tensor (and part) of the run by natural key, read back as numpy."""
    rows = ws.cursor().execute(
        "SELECT tensor_id, step, module, io, idx, part, arg_name, call_index FROM dump_tensors "
        "WHERE run_id = ? AND rank IS NULL", [run_id]).fetchall()  # fmt: skip
    out = {}
    for tid, *key in rows:
        t = query.load_tensor(ws, int(tid))
        out[tuple(key)] = t.float().numpy() if t.dtype.is_floating_point else t.numpy()
    return out
