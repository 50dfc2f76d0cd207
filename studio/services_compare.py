"""Cached whole-run comparisons for the Compare page (keyed by the workspace directory too)."""

from __future__ import annotations

import streamlit as st
import torch

from backend.analysis import lod, source
from backend.compare.runs import load_matrix
from studio.state import workspace


def _root() -> str:
    return str(workspace().root)


@st.cache_resource(show_spinner=False, max_entries=4, ttl=120)
def _compare(root: str, a: str, b: str, steps: tuple | None, modules: str | None, thr):
    from backend.compare.runs import compare_any

    steps_ = list(steps) if steps is not None else None
    return compare_any(workspace(), a, b, steps=steps_, modules=modules, threshold=thr)


def compare(a: str, b: str, steps: list[int] | None, modules: str | None, threshold: float | None):
    """The comparison of run B against run A (CompareResult, or StatsResult by statistics)."""
    return _compare(_root(), a, b, tuple(steps) if steps else None, modules or None, threshold)


@st.cache_resource(show_spinner=False, max_entries=8)
def _pair_grids(root: str, a: str, b: str, row: int, key: tuple) -> tuple:
    res = _compare(root, a, b, *key)
    pair = res.pairs[row]
    ws = workspace()
    x = load_matrix(ws, pair.a, source.run_config(ws, a)).float()
    y = load_matrix(ws, pair.b, source.run_config(ws, b)).float()
    d = x.to(torch.float64) - y.to(torch.float64)
    return (lod.build_grid(x, max_tokens=200, max_channels=400),
            lod.build_grid(y, max_tokens=200, max_channels=400),
            lod.build_grid(d.float(), max_tokens=100, max_channels=200))  # fmt: skip


def pair_grids(a: str, b: str, row: int, steps, modules, threshold) -> tuple:
    """Grids of A, B and A - B for one compared tensor (the 3D view)."""
    key = (tuple(steps) if steps else None, modules or None, threshold)
    return _pair_grids(_root(), a, b, row, key)
