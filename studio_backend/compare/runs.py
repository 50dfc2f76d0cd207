"""Whole-run comparison: align two runs, measure every pair, find where they part.

``compare_runs`` is what ``studio compare`` and the Compare page call. The tensors are read
memory-mapped once each, A and B of a pair side by side, so comparing costs about one read of
both runs plus the float64 arithmetic (bench/compare.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from studio_backend.analysis import parts, source, views
from studio_backend.compare import divergence, metrics
from studio_backend.compare.align import Alignment, Pair, Ref, align
from studio_backend.dumps.axis import to_matrix
from studio_backend.dumps.formats.common import load_source
from studio_backend.dumps.query import load_tensor
from studio_backend.errors import InputError
from studio_backend.workspace import Workspace


def locations(ws: Workspace, ids: list[int]) -> dict[int, tuple[str | None, str | None, str]]:
    """Where many tensors live, in one query (``load_tensor`` asks once per tensor,
    milliseconds each): ``(store_group, store_name, source_file)`` by tensor id; tensors of
    cluster-ingested runs are left out (``load_tensor`` reads them from their node)."""
    if not ids:
        return {}
    rows = (
        ws.cursor()
        .execute(
            "SELECT tensor_id, store_group, store_name, source_file FROM dump_tensors "
            "LEFT JOIN dump_cluster_runs c USING (run_id) "
            "WHERE tensor_id IN (SELECT UNNEST(?::BIGINT[]))"  # one parameter however many
            " AND c.run_id IS NULL",  # runs ingested with --ray: load_tensor finds their node
            [[int(i) for i in ids]],
        )
        .fetchall()
    )
    return {int(i): (g, n, f) for i, g, n, f in rows}


def load_matrix(
    ws: Workspace, ref: Ref, config: dict, where: dict[int, tuple] | None = None
) -> torch.Tensor:
    """One side of a pair as ``[tokens, channels]`` (a fused part split first); ``where``:
    locations already looked up (``locations``), else ``load_tensor`` asks."""
    group, name, src = (where or {}).get(int(ref.tensor_id), (None, None, None))
    if group is not None:
        t = ws.tensors.get(group, name)
    elif src is not None:
        t = load_source(src)
    else:
        t = load_tensor(ws, ref.tensor_id)  # unknown here: its error names the id
    if ref.split:
        t = parts.split(ref.module, t, config, ref.part)
    return to_matrix(t, min(ref.token_dims, t.dim()))


def recipe_of(ref: Ref, config: dict) -> views.Recipe:
    """How ``load_matrix`` makes a side's matrix, as a recipe a Ray node can follow."""
    if not ref.split:
        return views.Recipe(ref.token_dims, plain=True)
    cfg = json.dumps(config, sort_keys=True)
    return views.Recipe(ref.token_dims, ref.module, ref.part, cfg, plain=True)


def pair_grids(ws: Workspace, pair: Pair, config_a: dict, config_b: dict) -> tuple:
    """Grids of A, B and A - B of one pair (the Compare page's 3D view), computed where the
    tensors are: a side on another Ray node is not moved here, only the grids are."""
    recs = [recipe_of(pair.a, config_a), recipe_of(pair.b, config_b)]
    return views.run(ws, "pair_grids", [pair.a.tensor_id, pair.b.tensor_id], recs)


@dataclass
class CompareResult:
    run_a: str
    run_b: str
    conventions: tuple[str | None, str | None]
    pairs: list[Pair]
    table: pd.DataFrame  # one row per pair, forward order; index = position in ``pairs``
    per_token: dict[int, dict[str, np.ndarray]]
    first: dict | None
    ranked: pd.DataFrame
    unaligned: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    threshold_override: float | None = None
    ranked_by: str = "rel_diff of the output minus rel_diff of what the module received"

    def heatmap(self, step: int, metric: str = "rel_diff", io: str = "output") -> pd.DataFrame:
        """Tensor x token matrix of a per-token metric for one step position (forward order)."""
        sub = self.table[(self.table["step"] == step) & (self.table["io"] == io)]
        sub = sub[sub["rel_diff"].notna() | divergence.nonfinite(sub)]  # NaN tokens stay blank
        rows = {r.label: self.per_token[int(i)][metric] for i, r in sub.iterrows()}
        if not rows:
            return pd.DataFrame()
        width = max(len(v) for v in rows.values())
        mat = np.full((len(rows), width), np.nan)
        for k, v in enumerate(rows.values()):
            mat[k, : len(v)] = v
        return pd.DataFrame(mat, index=list(rows), columns=range(width))

    def token_first(self, step: int) -> list[str | None]:
        """For each token of a step, the first tensor where it crosses its threshold."""
        tab = self.table
        sub = tab[(tab["step"] == step) & (tab["rel_diff"].notna() | divergence.nonfinite(tab))]
        first: list[str | None] = []
        for i, r in sub.iterrows():
            rd = self.per_token[int(i)]["rel_diff"]
            if len(first) < len(rd):
                first += [None] * (len(rd) - len(first))
            for t in np.flatnonzero(divergence.over(rd, r["threshold"])):
                if first[t] is None:
                    first[t] = r["label"]
        return first

    def as_json(self, *, per_token: bool = False) -> dict:
        tensors = records(self.table.drop(columns=["canonical"]))
        if per_token:
            for rec, i in zip(tensors, self.table.index, strict=True):
                rec["per_token"] = {m: [clean(x) for x in v.tolist()]
                                    for m, v in self.per_token[int(i)].items()}  # fmt: skip
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "conventions": {"a": self.conventions[0], "b": self.conventions[1]},
            "thresholds": self.threshold_override or dict(divergence.THRESHOLDS),
            "first_divergence": {k: clean(v) for k, v in self.first.items()}
            if self.first
            else None,
            "compared": len(self.table),
            "ranked": records(self.ranked.head(20)),
            "unaligned": records(self.unaligned),
            "notes": self.notes,
            "tensors": tensors,
        }


def clean(v: object) -> object:
    """A JSON-safe value: NaN -> None, inf -> "inf", numpy scalars -> Python."""
    if isinstance(v, float | np.floating):
        return None if math.isnan(v) else (str(v) if math.isinf(v) else float(v))
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: clean(v) for k, v in r.items()} for r in df.to_dict("records")]


def _row(p: Pair, whole: dict[str, float]) -> dict:
    idx = p.a.arg_name if p.a.idx == -1 and p.a.arg_name else p.a.idx
    return {
        "step": p.order[0], "step_a": p.a.step, "step_b": p.b.step, "label": p.label,
        "canonical": p.key[0], "module_a": p.a.module, "module_b": p.b.module, "io": p.a.io,
        "index": idx, "part": p.key[3], "dtype_a": p.a.dtype, "dtype_b": p.b.dtype,
        "tokens": p.a.matrix[0], "channels": p.a.matrix[1], **whole,
        "tensor_a": p.a.tensor_id, "tensor_b": p.b.tensor_id,
    }  # fmt: skip


def measure(ws: Workspace, al: Alignment) -> tuple[pd.DataFrame, dict[int, dict]]:
    cfg = dict(zip((al.run_a, al.run_b), al.configs, strict=True))
    where = locations(ws, sorted({r.tensor_id for p in al.pairs for r in (p.a, p.b)}))

    def loader(p: Pair) -> metrics.Loader:
        return lambda: (load_matrix(ws, p.a, cfg[al.run_a], where),
                        load_matrix(ws, p.b, cfg[al.run_b], where))  # fmt: skip

    with metrics.threads():
        results = metrics.compare_all([loader(p) for p in al.pairs])
    rows = [_row(p, whole) for p, (whole, _tok) in zip(al.pairs, results, strict=True)]
    tok = {i: r[1] for i, r in enumerate(results)}
    cols = list(_row(al.pairs[0], dict.fromkeys(metrics.METRICS, 0.0))) if al.pairs else []
    return pd.DataFrame(rows, columns=cols or None), tok


@dataclass(frozen=True)
class Options:
    """What to compare and how strictly: the same for tensors and statistics, ``studio
    compare``'s flags and the Compare page's inputs. ``steps``: step positions (0 = each run's
    first step); ``modules``: a regex searched in either run's module name; ``threshold``: the
    rel_diff above which a tensor diverges (None: by dtype pair, divergence.THRESHOLDS)."""

    steps: tuple[int, ...] | None = None
    modules: str | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.steps is not None:
            object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        if self.modules:
            source.check_regex(self.modules)
        if self.threshold is not None and not self.threshold >= 0:
            raise InputError(f"--threshold {self.threshold}", "must be a number >= 0")

    @classmethod
    def of(cls, options: Options | None, kw: dict) -> Options:
        """``options``, or one made of keywords (``steps=``, ``modules=``, ``threshold=``)."""
        if options is not None and kw:
            raise TypeError("pass Options or keywords, not both")
        return options if options is not None else cls(**kw)


def compare_runs(
    ws: Workspace, run_a: str, run_b: str, options: Options | None = None, **kw: object
) -> CompareResult:
    """Compare run B against run A (the reference) tensor by tensor; ``options`` or its fields
    as keywords."""
    o = Options.of(options, kw)
    steps = list(o.steps) if o.steps is not None else None
    al = align(ws, run_a, run_b, steps=steps, modules=o.modules)
    table, tok = measure(ws, al)
    if table.empty:
        table = pd.DataFrame(columns=["step", "label", "canonical", "module_a", "module_b", "io",
                                      "index", "part", "dtype_a", "dtype_b", "rel_diff",
                                      "threshold", "diverged"])  # fmt: skip
    else:
        table = divergence.mark(table, o.threshold)
    first = divergence.first_divergence(table, tok) if len(table) else None
    ranked = divergence.contributions(table) if len(table) else pd.DataFrame()
    return CompareResult(run_a, run_b, al.conventions, al.pairs, table, tok, first, ranked,
                         al.unaligned_frame(), al.notes, o.threshold)  # fmt: skip


def compare_any(
    ws: Workspace, run_a: str, run_b: str, options: Options | None = None, **kw: object
):  # noqa: ANN201 - CompareResult | StatsResult
    """Tensors when both runs hold them, else statistic deltas (studio_backend/compare/stats.py)."""
    from studio_backend.compare import stats

    o = Options.of(options, kw)
    if stats.stats_only(ws, run_a) or stats.stats_only(ws, run_b):
        return stats.compare_stats(ws, run_a, run_b, steps=o.steps, modules=o.modules,
                                   threshold=o.threshold)  # fmt: skip
    return compare_runs(ws, run_a, run_b, o)
