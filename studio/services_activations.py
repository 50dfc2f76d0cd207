"""Cached activation loads and grids for the Activations page.

Every cache is keyed by the workspace directory too, so two workspaces served by one process
(tests, or a restarted studio) never see each other's data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from backend.analysis import lod, source
from backend.analysis.source import Selected
from studio.state import workspace


def _root() -> str:
    return str(workspace().root)


@st.cache_data(show_spinner=False, max_entries=16, ttl=30)
def _runs(root: str) -> pd.DataFrame:
    from backend.dumps.query import list_runs

    return list_runs(workspace())


def runs() -> pd.DataFrame:
    return _runs(_root())


@st.cache_data(show_spinner=False, max_entries=64, ttl=30)
def _rows(root: str, run_id: str, step, pattern, io) -> pd.DataFrame:
    return source.tensors(workspace(), run_id, step=step, pattern=pattern, io=io)


def rows(run_id: str, step: int | None, pattern: str | None, io: str | None) -> pd.DataFrame:
    return _rows(_root(), run_id, step, pattern, io)


@st.cache_data(show_spinner=False, max_entries=16)
def _config(root: str, run_id: str) -> dict:
    return source.run_config(workspace(), run_id)


def config(run_id: str) -> dict:
    return _config(_root(), run_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def _raw(root: str, sel: Selected) -> torch.Tensor:
    return source.load(workspace(), sel, config(sel.run_id))


def raw(sel: Selected) -> torch.Tensor:
    """The tensor as stored (shape and dtype kept)."""
    return _raw(_root(), sel)


@st.cache_resource(show_spinner=False, max_entries=8)
def _tensor(root: str, sel: Selected) -> torch.Tensor:
    return lod.as_matrix(raw(sel), keep_float=True).contiguous()


def tensor(sel: Selected) -> torch.Tensor:
    """``[tokens, channels]`` view of the selection (bf16 kept: pooling is exact in it)."""
    return _tensor(_root(), sel)


@st.cache_data(show_spinner=False, max_entries=8)
def _layer_stats(root: str, run_id: str, step: int, io: str) -> pd.DataFrame:
    return source.layer_stats(workspace(), run_id, step=step, io=io)


def layer_stats(run_id: str, step: int, io: str) -> pd.DataFrame:
    return _layer_stats(_root(), run_id, step, io)


@st.cache_data(show_spinner=False, max_entries=8)
def _persistence(root: str, run_id: str, step: int, io: str, kind: str, k: int) -> pd.DataFrame:
    return source.persistence(workspace(), layer_stats(run_id, step, io), kind, k=k)


def persistence(run_id: str, step: int, io: str, kind: str, k: int) -> pd.DataFrame:
    return _persistence(_root(), run_id, step, io, kind, k)


@st.cache_data(show_spinner=False, max_entries=8)
def _token_texts(root: str, run_id: str, step: int, tokenizer_dir: str) -> list[str] | None:
    return source.token_texts(workspace(), run_id, step, tokenizer_dir or None)


def token_texts(run_id: str, step: int, tokenizer_dir: str) -> list[str] | None:
    return _token_texts(_root(), run_id, step, tokenizer_dir)


def grid(x: torch.Tensor, **kwargs) -> lod.Grid:
    return lod.build_grid(x, **kwargs)


def channels_of(spec: str, n: int) -> np.ndarray | None:
    return None if not spec.strip() else lod.parse_channels(spec, n)
