"""The difference of two profiles, by kernel/op name, family or module."""

from __future__ import annotations

import pandas as pd

from studio_backend.errors import InputError
from studio_backend.trace import analysis
from studio_backend.workspace import Workspace

KEYS = ("name", "family", "module")


def diff(
    ws: Workspace,
    a: str,
    b: str,
    *,
    by: str = "name",
    kind: str = "auto",
    table: list | None = None,
) -> pd.DataFrame:
    """key, calls_a, total_us_a, calls_b, total_us_b, delta_us (b - a), ratio (b / a).

    Keys present in one profile only get 0 for the other (a new fused kernel shows up as
    calls_a = 0). Sorted by the absolute change, largest first.
    """
    if by not in KEYS:
        raise InputError(by, f"diff key must be one of {', '.join(KEYS)}")
    if kind == "auto":
        both = (
            analysis.profile_info(ws, a)["has_device"]
            and analysis.profile_info(ws, b)["has_device"]
        )
        kind = "kernel" if both else "cpu_op"

    def side(pid: str) -> pd.DataFrame:
        if by == "name":
            df = analysis.top(ws, pid, kind=kind, n=None)
        elif by == "family":
            df = analysis.families(ws, pid, kind=kind, table=table)
        else:
            df = analysis.by_module(ws, pid, kind=kind)
        return df.rename(columns={by: "key"})[["key", "calls", "total_us"]]

    left, right = side(a), side(b)
    out = left.merge(right, on="key", how="outer", suffixes=("_a", "_b"))
    for col in ("calls_a", "calls_b", "total_us_a", "total_us_b"):
        out[col] = out[col].fillna(0)
    out["calls_a"] = out["calls_a"].astype("int64")
    out["calls_b"] = out["calls_b"].astype("int64")
    out["delta_us"] = out["total_us_b"] - out["total_us_a"]
    out["ratio"] = out["total_us_b"] / out["total_us_a"].where(out["total_us_a"] > 0)
    out["_abs"] = out["delta_us"].abs()
    out = out.sort_values(["_abs", "key"], ascending=[False, True]).reset_index(drop=True)
    return out[["key", "calls_a", "total_us_a", "calls_b", "total_us_b", "delta_us", "ratio"]]
