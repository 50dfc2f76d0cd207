"""Cached activation loads and grids for the Activations page (keyed by selection, per process)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from backend.analysis import lod, source
from backend.analysis.source import Selected
from studio.state import workspace


@st.cache_data(show_spinner=False, max_entries=16)
def runs() -> pd.DataFrame:
    from backend.dumps.query import list_runs

    return list_runs(workspace())


@st.cache_data(show_spinner=False, max_entries=64)
def rows(run_id: str, step: int | None, pattern: str | None, io: str | None) -> pd.DataFrame:
    return source.tensors(workspace(), run_id, step=step, pattern=pattern, io=io)


@st.cache_data(show_spinner=False, max_entries=16)
def config(run_id: str) -> dict:
    return source.run_config(workspace(), run_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def tensor(sel: Selected) -> torch.Tensor:
    # float32 copy once: every view of this tensor then avoids the bf16 conversion.
    return lod.as_matrix(source.load(workspace(), sel, config(sel.run_id))).contiguous()


@st.cache_resource(show_spinner=False, max_entries=8)
def raw(sel: Selected) -> torch.Tensor:
    """The tensor as stored (shape and dtype kept)."""
    return source.load(workspace(), sel, config(sel.run_id))


@st.cache_data(show_spinner=False, max_entries=8)
def layer_stats(run_id: str, step: int, io: str) -> pd.DataFrame:
    return source.layer_stats(workspace(), run_id, step=step, io=io)


@st.cache_data(show_spinner=False, max_entries=8)
def persistence(run_id: str, step: int, io: str, kind: str, k: int) -> pd.DataFrame:
    return source.persistence(workspace(), layer_stats(run_id, step, io), kind, k=k)


@st.cache_data(show_spinner=False, max_entries=8)
def token_texts(run_id: str, step: int, tokenizer_dir: str) -> list[str] | None:
    return source.token_texts(workspace(), run_id, step, tokenizer_dir or None)


def grid(x: torch.Tensor, **kwargs) -> lod.Grid:
    return lod.build_grid(x, **kwargs)


def channels_of(spec: str, n: int) -> np.ndarray | None:
    return None if not spec.strip() else lod.parse_channels(spec, n)
