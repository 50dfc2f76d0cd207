"""Comparison by statistics, for runs that hold statistics only (msit ``statistics.csv``,
msprobe ``dump.json`` of a ``task: statistics`` dump).

Each tensor has Max, Min, Mean and L2 norm. A run with tensors contributes the statistics the
studio computed at ingest (``dump_stats``); a statistics-only run those the tool wrote, per rank.
Ranks are merged the way msprobe's graph view does: equal on every rank (relative 1e-6) ->
replicated, keep one; otherwise shards: max of Max, min of Min, mean of Mean (equal shard sizes),
sqrt(sum of norm^2). A sum of partial results cannot be recovered from statistics: such tensors
(vLLM FusedMoE partial sums) compare as shards and will differ, as msprobe's do.

The divergence metric is the largest relative delta of Max, Min and norm (``stat_rel_delta``,
|B - A| / |A|; Mean is reported but not used: it sits near zero), against ``STATS_THRESHOLDS``.
Statistics can agree while elements differ: a pass here is necessary, not sufficient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from studio_backend.compare import align_rules as R
from studio_backend.compare import divergence
from studio_backend.compare.align import _index_key, _specific, canonical, convention, order_key
from studio_backend.dumps import query
from studio_backend.workspace import Workspace

STATS = ("max", "min", "mean", "norm")


# stat_rel_delta threshold per dtype: measured noise x 2 (docs/COMPARE.md "Calibration")
STATS_THRESHOLDS: dict[str, float] = {"float64": 1e-10, "float32": 1e-5, "float16": 3e-3,
                                      "bfloat16": 2e-2}  # fmt: skip


def stats_threshold(dtype_a: str, dtype_b: str, override: float | None = None) -> float:
    if override is not None:
        return float(override)
    t = STATS_THRESHOLDS
    return max(t.get(divergence._dtype(dtype_a), 2e-2), t.get(divergence._dtype(dtype_b), 2e-2))


def _rel(a: float, b: float) -> float:
    if a != a or b != b:
        return 0.0 if (a != a) == (b != b) else float("inf")
    return abs(b - a) / abs(a) if a else (0.0 if b == 0 else float("inf"))


def shared(ws: Workspace, run_id: str) -> set[str]:
    """Modules flagged shared or in place at ingest: one object for all layers (its statistics
    are not one call's) or rotating in place (its input statistics are taken after the call)."""
    return set(query.shared_modules(ws, run_id)["module"])


def stats_only(ws: Workspace, run_id: str) -> bool:
    """True when the run has no stitched tensors but the tool's own statistics."""
    n, s = (
        ws.cursor()
        .execute(
            "SELECT (SELECT count(*) FROM dump_tensors WHERE run_id = ? AND rank IS NULL), "
            "(SELECT count(*) FROM dump_tool_stats WHERE run_id = ?)",
            [run_id, run_id],
        )
        .fetchone()
    )
    return n == 0 and s > 0


def _merge(g: pd.DataFrame) -> pd.Series:
    v = g[list(STATS)].to_numpy(dtype=float)
    if len(g) == 1 or np.allclose(v, v[0], rtol=1e-6, atol=0, equal_nan=True):
        out = v[0]
    else:
        out = np.array(
            [v[:, 0].max(), v[:, 1].min(), v[:, 2].mean(), math.sqrt((v[:, 3] ** 2).sum())]
        )
    return pd.Series(
        {"dtype": g["dtype"].iloc[0], "ranks": len(g), **dict(zip(STATS, out, strict=True))}
    )


def run_stats(ws: Workspace, run_id: str) -> pd.DataFrame:
    """One row per tensor: step, module, io, idx, arg_name, dtype, max, min, mean, norm."""
    if stats_only(ws, run_id):
        df = query.tool_stats(ws, run_id)
        df["arg_name"] = df["arg_name"].astype(object).where(df["arg_name"].notna(), "")
        keys = ["step", "module", "io", "idx", "arg_name"]
        df = df.groupby(keys, sort=False).apply(_merge, include_groups=False).reset_index()
        df["arg_name"] = df["arg_name"].replace("", None)
        return df
    return (
        ws.cursor()
        .execute(
            "SELECT t.step, t.module, t.io, t.idx, t.arg_name, t.dtype, s.max, s.min, s.mean, "
            "s.l2 AS norm, 1 AS ranks FROM dump_tensors t JOIN dump_stats s USING (tensor_id) "
            "WHERE t.run_id = ? AND t.rank IS NULL AND t.part IS NULL ORDER BY t.step",
            [run_id],
        )
        .df()
    )


def _keyed(df: pd.DataFrame) -> dict[int, dict[tuple, dict]]:
    out: dict[int, dict[tuple, dict]] = {}
    for r in df.to_dict("records"):
        canon = canonical(r["module"])
        parent, _, leaf = canon.rpartition(".")
        part = None
        if leaf in R.SPLIT_TO_FUSED:
            fused, fpart, alias = R.SPLIT_TO_FUSED[leaf]
            if r["io"] == "input" and alias is not None:
                continue  # the same tensor as the first projection's input
            canon = f"{parent}.{fused}" if parent else fused
            part = fpart if r["io"] == "output" else None
        arg = r["arg_name"] if isinstance(r["arg_name"], str) else None
        key = (canon, r["io"], _index_key(leaf, r["io"], int(r["idx"]), arg), part, 0)
        out.setdefault(int(r["step"]), {}).setdefault(key, r)
    return out


@dataclass
class StatsResult:
    run_a: str
    run_b: str
    conventions: tuple[str | None, str | None]
    table: pd.DataFrame
    first: dict | None
    ranked: pd.DataFrame
    unaligned: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    ranked_by: str = "stat_rel_delta of the output minus that of the tensor before it"

    def as_json(self, *, per_token: bool = False) -> dict:  # noqa: ARG002 - no tokens here
        from studio_backend.compare.runs import clean, records

        first = {k: clean(v) for k, v in self.first.items()} if self.first else None
        return {"mode": "statistics", "run_a": self.run_a, "run_b": self.run_b,
                "conventions": {"a": self.conventions[0], "b": self.conventions[1]},
                "first_divergence": first, "compared": len(self.table),
                "ranked": records(self.ranked.head(20)), "unaligned": records(self.unaligned),
                "notes": self.notes, "tensors": records(self.table)}  # fmt: skip


def compare_stats(
    ws: Workspace, run_a: str, run_b: str, *, steps=None, modules=None, threshold=None
) -> StatsResult:
    """Statistic deltas (B - A) per aligned tensor; steps by position, names as align.py."""
    import re

    rx = re.compile(modules) if modules else None
    sa, sb = run_stats(ws, run_a), run_stats(ws, run_b)
    conv = (convention(sa["module"].unique().tolist()), convention(sb["module"].unique().tolist()))
    ka, kb = _keyed(sa), _keyed(sb)
    flagged = shared(ws, run_a) | shared(ws, run_b)
    la, lb = sorted(ka), sorted(kb)
    rows, unaligned = [], []
    for pos in range(max(len(la), len(lb))):
        if steps is not None and pos not in steps:
            continue
        ea = ka[la[pos]] if pos < len(la) else {}
        eb = kb[lb[pos]] if pos < len(lb) else {}
        for side, mine, other in (("A", ea, eb), ("B", eb, ea)):
            for key, r in mine.items():
                if key in other or (rx and not rx.search(r["module"])):
                    continue
                why = (
                    (conv[0] != conv[1] and _specific(key))
                    or "no tensor with this role in "
                    f"run {'B' if side == 'A' else 'A'} (statistics cannot split a fused tensor)"
                )
                unaligned.append({"run": side, "step": r["step"], "module": r["module"],
                                  "io": r["io"], "index": r["idx"], "part": key[3], "reason": why})  # fmt: skip
        for key in sorted(set(ea) & set(eb), key=order_key):
            a, b = ea[key], eb[key]
            if rx and not (rx.search(a["module"]) or rx.search(b["module"])):
                continue
            why = (conv[0] != conv[1] and _specific(key)) or (
                (a["module"] in flagged or b["module"] in flagged)
                and "a shared or in-place module (Dumps page): its statistics are not one call's"
            )
            if why:
                for side, r in (("A", a), ("B", b)):
                    unaligned.append({"run": side, "step": r["step"], "module": r["module"],
                                      "io": r["io"], "index": r["idx"], "part": key[3],
                                      "reason": why})  # fmt: skip
                continue
            row = {"step": pos, "label": f"{a['module']}{f'[{key[3]}]' if key[3] else ''} "
                   f"{a['io']}_{a['idx']}", "canonical": key[0], "module_a": a["module"],
                   "module_b": b["module"], "io": a["io"], "index": a["idx"], "part": key[3],
                   "dtype_a": a["dtype"], "dtype_b": b["dtype"]}  # fmt: skip
            for s in STATS:
                row[f"{s}_a"], row[f"{s}_b"], row[f"{s}_delta"] = a[s], b[s], b[s] - a[s]
            row["stat_rel_delta"] = max(_rel(a[s], b[s]) for s in ("max", "min", "norm"))
            row["threshold"] = stats_threshold(a["dtype"], b["dtype"], threshold)
            rows.append(row)
    table = pd.DataFrame(rows)
    first, ranked = None, pd.DataFrame()
    if len(table):
        # integer tensors (ids, positions) are reported but do not decide, as with tensors
        integer = table["dtype_a"].astype(str).str.lower().str.contains("int|bool") | table[
            "dtype_b"
        ].astype(str).str.lower().str.contains("int|bool")
        table["diverged"] = (table["stat_rel_delta"] > table["threshold"]) & ~integer
        hit = table[table["diverged"]]
        if len(hit):
            r = hit.iloc[0]
            first = {"step": int(r["step"]), "module": r["module_a"], "module_b": r["module_b"],
                     "label": r["label"], "metric": "stat_rel_delta",
                     "value": float(r["stat_rel_delta"]), "threshold": float(r["threshold"])}  # fmt: skip
        prev = table["stat_rel_delta"].shift(1).fillna(0.0)
        ranked = table.assign(rel_diff=table["stat_rel_delta"], received=prev,
                              added=table["stat_rel_delta"] - prev, versus="previous tensor")  # fmt: skip
        names = set(table["canonical"])
        parents = {n for n in names if R.CONTAINERS.search(n)
                   and any(m != n and (n == "" or m.startswith(f"{n}.")) for m in names)}  # fmt: skip
        keep = (ranked["io"] == "output") & ~ranked["canonical"].isin(parents)
        ranked = ranked[keep].sort_values("added", ascending=False)
        ranked = ranked[["step", "module_a", "label", "rel_diff", "received", "added", "versus",
                         "diverged"]].rename(columns={"module_a": "module"}).reset_index(drop=True)  # fmt: skip
    cols = ["run", "step", "module", "io", "index", "part", "reason"]
    return StatsResult(
        run_a, run_b, conv, table, first, ranked, pd.DataFrame(unaligned, columns=cols)
    )
