"""Outlier finder: a run's tensors ranked by the statistics stored at ingest (dump_stats).

Nothing is loaded: max |x|, the massive-activation count and kurtosis were computed on each
stitched tensor's token axis when it was ingested, so ranking a whole run is one SQL query.
Output / input indices are named by their role (ROLES) so "output 1" reads as "residual".
"""

from __future__ import annotations

import re

import pandas as pd

from studio_backend.errors import InputError
from studio_backend.workspace import Workspace

# metric name on the page -> dump_stats column (ranked descending)
# dump_stats holds the excess kurtosis (Gaussian = 0; studio_backend/dumps/stats.py).
METRICS = {"max |x|": "absmax", "massive count": "massive_count", "kurtosis": "kurtosis"}

# (module regex, io, idx, role). vLLM decoder layers return (hidden_states, residual); its
# fused RMSNorm takes (x, residual) and returns (normed, x + residual). A Hugging Face decoder
# layer returns the hidden state alone (output 0). First match wins.
ROLES: list[tuple[str, str, int, str]] = [
    (r"(^|\.)layers\.\d+$", "output", 0, "hidden state"),
    (r"(^|\.)layers\.\d+$", "output", 1, "residual"),
    (r"(^|\.)layers\.\d+$", "input", 0, "hidden state"),
    (r"(^|\.)layers\.\d+$", "input", 1, "residual"),
    (r"layernorm$|_norm$|(^|\.)norm$", "input", 0, "hidden state"),
    (r"layernorm$|_norm$|(^|\.)norm$", "input", 1, "residual"),
    (r"layernorm$|_norm$|(^|\.)norm$", "output", 0, "normed hidden state"),
    (r"layernorm$|_norm$|(^|\.)norm$", "output", 1, "residual (x + residual)"),
]


def role(module: str, io: str, idx: int) -> str | None:
    """What a module's ``io`` tensor number ``idx`` is (None when no rule says)."""
    for pattern, r_io, r_idx, name in ROLES:
        if r_io == io and r_idx == idx and re.search(pattern, module):
            return name
    return None


def index_label(module: str, io: str, idx: int) -> str:
    """``"1 (residual)"`` for a selectbox of indices."""
    r = role(module, io, idx)
    return f"{idx} ({r})" if r else str(idx)


def rank(
    ws: Workspace,
    run_id: str,
    *,
    by: str = "max |x|",
    step: int | None = None,
    io: str | None = None,
    limit: int = 50,
) -> pd.DataFrame:
    """The run's whole stitched tensors with statistics, best first by ``by`` (ties: id order)."""
    if by not in METRICS:
        raise InputError("outlier finder", f"rank by one of {', '.join(METRICS)}, not {by!r}")
    col = METRICS[by]
    # Integer tensors (token ids, routing indices) are not activations.
    where = ["t.run_id = ?", "t.rank IS NULL", "t.part IS NULL", "t.dtype NOT LIKE '%int%'"]
    args: list = [run_id]
    if step is not None:
        where.append("t.step = ?")
        args.append(int(step))
    if io is not None:
        where.append("t.io = ?")
        args.append(io)
    # Fixed clauses and a whitelisted column; all values are bound parameters.
    sql = (
        "SELECT t.tensor_id, t.step, t.module, t.io, t.idx, t.layer, t.dtype, t.shape, "  # noqa: S608
        "s.absmax AS max_abs, s.massive_count AS massive, s.kurtosis AS excess_kurtosis, s.over6_count AS over_6 "
        "FROM dump_tensors t JOIN dump_stats s USING (tensor_id) "
        f"WHERE {' AND '.join(where)} "
        f"ORDER BY s.{col} DESC NULLS LAST, t.tensor_id LIMIT ?"
    )
    df = ws.cursor().execute(sql, [*args, int(limit)]).df()
    df.insert(
        5,
        "role",
        [role(m, i, int(x)) or "" for m, i, x in zip(df.module, df.io, df.idx, strict=True)],
    )
    return df
