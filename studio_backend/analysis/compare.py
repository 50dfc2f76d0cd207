"""Comparison of two activations of the same shape (e.g. BF16 vs W8A8, before vs after smoothing).

Metrics as msit/msprobe report them (REFERENCE.md section 3), plus outlier-structure agreement:
Jaccard of the top-K outlier channels and Spearman rank correlation of per-channel absmax.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from studio_backend.analysis.lod import as_matrix
from studio_backend.analysis.outliers import channel_absmax, top_channels
from studio_backend.errors import InputError

# Relative error denominators below this are treated as this (avoids inf on exact zeros).
REL_EPS = 1e-12


@dataclass(frozen=True)
class Comparison:
    cosine: float
    max_abs_error: float
    max_rel_error: float
    within_0_1pct: float
    within_0_5pct: float
    topk_jaccard: float
    absmax_spearman: float
    k: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _pair(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = as_matrix(a).double(), as_matrix(b).double()
    if x.shape != y.shape:
        raise InputError("comparison", f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y


def relative_error(actual, reference) -> torch.Tensor:
    """|actual - reference| / max(|reference|, eps), elementwise."""
    x, y = _pair(actual, reference)
    return (x - y).abs() / y.abs().clamp_min(REL_EPS)


def cosine(a, b) -> float:
    x, y = _pair(a, b)
    x, y = x.reshape(-1), y.reshape(-1)
    den = float(x.norm() * y.norm())
    return float(x @ y) / den if den > 0 else float("nan")


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties) = Pearson of the ranks."""
    ra = pd.Series(a).rank(method="average").to_numpy()
    rb = pd.Series(b).rank(method="average").to_numpy()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def compare(actual, reference, *, k: int = 10) -> Comparison:
    """All metrics of ``actual`` against ``reference`` (relative errors divide by reference)."""
    x, y = _pair(actual, reference)
    rel = (x - y).abs() / y.abs().clamp_min(REL_EPS)
    return Comparison(
        cosine=cosine(x, y),
        max_abs_error=float((x - y).abs().max()),
        max_rel_error=float(rel.max()),
        within_0_1pct=float((rel <= 1e-3).double().mean()),
        within_0_5pct=float((rel <= 5e-3).double().mean()),
        topk_jaccard=jaccard(top_channels(x, k), top_channels(y, k)),
        absmax_spearman=spearman(channel_absmax(x), channel_absmax(y)),
        k=k,
    )
