"""Cached whole-run comparisons for the Compare page (keyed by the workspace directory too)."""

from __future__ import annotations

import threading

import streamlit as st

from studio_backend.analysis import source
from studio_backend.compare.runs import pair_grids as pair_grids_of
from studio_ui.state import workspace


@st.cache_resource(show_spinner=False)
def warm_metrics(delay_s: float = 2.0) -> threading.Timer:
    """Ready the comparison kernel in the background, once per studio process: numba's first
    call in a process takes ~1 s (its typing setup, the kernel from its disk cache), a machine's
    very first ~4 s (compiling). ``delay_s`` lets the first page render first."""
    from studio_backend.compare import metrics

    timer = threading.Timer(delay_s, metrics.warm)
    timer.daemon = True
    timer.start()
    return timer


def _root() -> str:
    return str(workspace().root)


@st.cache_resource(show_spinner=False, max_entries=4, ttl=120)
def _compare(root: str, a: str, b: str, steps: tuple | None, modules: str | None, thr):
    from studio_backend.compare.runs import Options, compare_any

    return compare_any(workspace(), a, b, Options(steps, modules, thr))


def compare(a: str, b: str, steps: list[int] | None, modules: str | None, threshold: float | None):
    """The comparison of run B against run A (CompareResult, or StatsResult by statistics)."""
    return _compare(_root(), a, b, tuple(steps) if steps else None, modules or None, threshold)


@st.cache_resource(show_spinner=False, max_entries=8)
def _pair_grids(root: str, a: str, b: str, row: int, key: tuple) -> tuple:
    res = _compare(root, a, b, *key)
    pair = res.pairs[row]
    ws = workspace()
    return pair_grids_of(ws, pair, source.run_config(ws, a), source.run_config(ws, b))


def pair_grids(a: str, b: str, row: int, steps, modules, threshold) -> tuple:
    """Grids of A, B and A - B for one compared tensor (the 3D view)."""
    key = (tuple(steps) if steps else None, modules or None, threshold)
    return _pair_grids(_root(), a, b, row, key)
