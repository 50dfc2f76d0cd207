"""Where two runs part: thresholds by dtype pair, the first divergence, the contribution ranking.

The divergence metric is rel_diff (metrics.py): a normalised squared error, 0 for equal
tensors, about (relative error)^2 / 2 for small ones, 1 for unrelated ones of equal norm. A
tensor diverges when its rel_diff exceeds the threshold of its dtype pair: the looser of the two
dtypes' entries in ``THRESHOLDS`` (calibrated on real runs, docs/COMPARE.md), or the user's.

Contribution of a module = rel_diff of its output minus rel_diff of what it received: its own
input when that pair was compared, else the nearest earlier compared tensor in forward order.
Modules are ranked by this increase (how much divergence they add, not how much they inherit);
containers whose children are compared (self_attn, mlp, decoder layers) are not ranked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studio_backend.compare.align_rules import CONTAINERS

# rel_diff threshold per dtype (see docs/COMPARE.md "Calibration" for the measured margins).
THRESHOLDS: dict[str, float] = {
    "float64": 1e-12,
    "float32": 1e-9,
    "float16": 1e-4,
    "bfloat16": 1e-3,
}
DEFAULT = 1e-3  # dtypes not in the table (fp8 and friends): the loosest known


def _dtype(d: str) -> str:
    return str(d).lower().removeprefix("torch.")


def threshold(dtype_a: str, dtype_b: str, override: float | None = None) -> float:
    """The rel_diff above which a tensor pair of these dtypes counts as diverged."""
    if override is not None:
        return float(override)
    return max(THRESHOLDS.get(_dtype(dtype_a), DEFAULT), THRESHOLDS.get(_dtype(dtype_b), DEFAULT))


def mark(table: pd.DataFrame, override: float | None = None) -> pd.DataFrame:
    """Adds ``threshold`` and ``diverged`` (integer tensors never diverge by rel_diff: their
    ``mismatch`` is reported, routing flips included, but does not decide). A float pair whose
    rel_diff is NaN holds a NaN or an inf (an fp16 overflow): diverged."""
    t = table.copy()
    t["threshold"] = [
        threshold(a, b, override) for a, b in zip(t["dtype_a"], t["dtype_b"], strict=True)
    ]
    t["diverged"] = (t["rel_diff"] > t["threshold"]) | nonfinite(t)
    return t


def nonfinite(table: pd.DataFrame) -> pd.Series:
    """Float pairs with elements whose rel_diff is NaN (a NaN or inf in either tensor)."""
    filled = (table["tokens"] > 0) & (table["channels"] > 0) if "tokens" in table else True
    return table["rel_diff"].isna() & table["mismatch"].isna() & filled


def over(rd: np.ndarray, limit: float) -> np.ndarray:
    """Tokens over the threshold: rel_diff above it, or NaN (a NaN or inf in the token)."""
    return (rd > limit) | np.isnan(rd)


def first_divergence(
    table: pd.DataFrame, per_token: dict[int, dict[str, np.ndarray]]
) -> dict[str, object] | None:
    """The first diverged tensor in forward order (table is in forward order), and its first
    token over the threshold."""
    hit = table[table["diverged"]]
    if hit.empty:
        return None
    row = hit.iloc[0]
    rd = per_token[int(row.name)]["rel_diff"]
    hits = np.flatnonzero(over(rd, row["threshold"]))
    return {
        "row": int(row.name),
        "step": int(row["step"]),
        "module": row["module_a"],
        "module_b": row["module_b"],
        "label": row["label"],
        "io": row["io"],
        "index": row["index"],
        "part": row["part"],
        "metric": "rel_diff",
        "value": float(row["rel_diff"]),
        "rel_diff": float(row["rel_diff"]),
        "cosine": float(row["cosine"]),
        "threshold": float(row["threshold"]),
        "first_token": int(hits[0]) if hits.size else None,
        "tokens_over": int(hits.size),
    }


def contributions(table: pd.DataFrame) -> pd.DataFrame:
    """Output tensors ranked by the rel_diff they add (see the module docstring)."""
    rows = []
    names = set(table["canonical"])
    # A container (align_rules.CONTAINERS) whose children are compared adds nothing of its own.
    parents = {n for n in names if CONTAINERS.search(n) and any(m.startswith(f"{n}.") or (n == ""
               and m) for m in names if m != n)}  # fmt: skip
    cols = ("step", "io", "canonical", "module_a", "label", "rel_diff", "diverged")
    by_step: dict[object, tuple[dict[str, float], list]] = {}  # step -> (seen, [prev]) in order
    per_step: dict[object, list[dict]] = {}
    for i, *vals in zip(table.index, *(table[c] for c in cols), strict=True):  # not iterrows: ms
        step, io, canon, module, label, rd, diverged = vals
        if pd.isna(rd):
            continue
        rd = float(rd)
        seen, prev = by_step.setdefault(step, ({}, [None]))
        out = per_step.setdefault(step, [])
        if io == "input":
            seen.setdefault(canon, rd)  # its first input (index 0 sorts first)
        elif canon not in parents:
            base = seen.get(canon)
            source = "own input" if base is not None else "previous tensor"
            if base is None:
                base = prev[0] if prev[0] is not None else 0.0
            out.append({
                "row": i, "step": int(step), "module": module, "label": label, "rel_diff": rd,
                "received": base, "added": rd - base,
                "growth": rd / base if base > 0 else np.inf if rd else 1.0,
                "versus": source, "diverged": bool(diverged),
            })  # fmt: skip
        prev[0] = rd
    rows = [r for step_rows in per_step.values() for r in step_rows]
    out = pd.DataFrame(rows, columns=["row", "step", "module", "label", "rel_diff", "received",
                                      "added", "growth", "versus", "diverged"])  # fmt: skip
    return out.sort_values("added", ascending=False, kind="stable").reset_index(drop=True)
