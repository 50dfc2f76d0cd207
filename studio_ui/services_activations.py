"""Cached activation loads and grids for the Activations page.

Every cache is keyed by the workspace directory too, so two workspaces served by one process
(tests, or a restarted studio) never see each other's data.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import streamlit as st
import torch

from studio_backend.analysis import lod, outliers, source, views
from studio_backend.analysis.source import Selected
from studio_backend.dumps.axis import Axis, to_matrix
from studio_ui.state import workspace


def _root() -> str:
    return str(workspace().root)


@st.cache_data(show_spinner=False, max_entries=16, ttl=30)
def _runs(root: str) -> pd.DataFrame:
    from studio_backend.dumps.query import list_runs

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


@st.cache_data(show_spinner=False, max_entries=64, ttl=30)
def _remote(root: str, sel: Selected) -> bool:
    return source.is_remote(workspace(), sel)


def remote(sel: Selected) -> bool:
    """True when the selection's tensor lies on another Ray node: every view of it below is
    then computed on that node and only the result comes here (never the tensor)."""
    return _remote(_root(), sel)


# cache_data: a hit is a copy (the page adds columns to the tables it gets)
@st.cache_data(show_spinner=False, max_entries=64)
def _on_node(root: str, op: str, sel: Selected, token_dims: int | None, kw: tuple) -> object:
    ws = workspace()
    _tid, rec = source.recipe(ws, sel, config(sel.run_id), token_dims,
                              as_stored=token_dims is None)  # fmt: skip
    return source.view(ws, op, [sel], [rec], **dict(kw))


def on_node(op: str, sel: Selected, token_dims: int | None, **kw) -> object:
    """``views.OPS[op]`` of a remote selection, computed on its node (cached)."""
    return _on_node(_root(), op, sel, token_dims, tuple(sorted(kw.items())))


def shape(sel: Selected) -> tuple[int, ...]:
    """The selection's shape as stored (a remote tensor is not moved to learn it)."""
    if remote(sel):
        return tuple(on_node("shape", sel, None)[0])
    return tuple(raw(sel).shape)


def matrix_shape(sel: Selected, token_dims: int | None = None) -> tuple[int, int]:
    """``(tokens, channels)`` of the selection's view on its token axis."""
    if remote(sel):
        from studio_backend.dumps.axis import matrix_shape as on_axis

        s = shape(sel)
        k = axis(sel).token_dims if token_dims is None else token_dims
        return on_axis(s, min(k, len(s)))
    return tuple(tensor(sel, token_dims).shape)


def nbytes(sel: Selected) -> int:
    """Bytes of the selection's stored tensor (what a full download moves)."""
    import re

    r = rows(sel.run_id, sel.step, f"^{re.escape(sel.module)}$", sel.io)
    r = r[r["idx"] == sel.idx]
    whole = r[r["part"].isna()]
    return int((whole if not whole.empty else r)["nbytes"].sum())


def _local(op: str, sel: Selected, token_dims: int, **kw) -> object:
    return views.OPS[op][1](tensor(sel, token_dims), **kw)


def top_k(sel: Selected, token_dims: int, t0: int, t1: int, k: int) -> pd.DataFrame:
    """The K largest |x| of tokens ``t0:t1`` (tokens numbered in the whole tensor)."""
    f = on_node if remote(sel) else _local
    return f("top_k", sel, token_dims, k=k, t0=t0, t1=t1)


def channel_table(sel: Selected, token_dims: int, t0: int, t1: int, k: int) -> pd.DataFrame:
    """The K channels of largest absmax over tokens ``t0:t1``."""
    f = on_node if remote(sel) else _local
    return f("channel_table", sel, token_dims, k=k, t0=t0, t1=t1)


def channel_absmax(sel: Selected, token_dims: int) -> np.ndarray:
    f = on_node if remote(sel) else _local
    return f("channel_absmax", sel, token_dims)


def ab(sel: Selected, token_dims: int, sel_b: Selected, k: int, **opts) -> tuple:
    """The A/B tab: (metrics of B against A, grids of A, B and B - A); B on its stored axis.
    With either side on another node it is computed there (the other side sent node to node)."""
    if remote(sel) or remote(sel_b):
        ws = workspace()
        recs = [source.recipe(ws, sel, config(sel.run_id), token_dims)[1],
                source.recipe(ws, sel_b, config(sel_b.run_id))[1]]  # fmt: skip
        return source.view(ws, "ab", [sel, sel_b], recs, k=k, **opts)
    return views.OPS["ab"][1](tensor(sel, token_dims), tensor(sel_b), k=k, **opts)


@st.cache_data(show_spinner=False, max_entries=64, ttl=30)
def _axis(root: str, sel: Selected) -> Axis:
    return source.axis_of(workspace(), sel)


def axis(sel: Selected) -> Axis:
    """The selection's token axis as decided at ingest (or overridden)."""
    return _axis(_root(), sel)


@st.cache_resource(show_spinner=False, max_entries=8)
def _tensor(root: str, sel: Selected, token_dims: int) -> torch.Tensor:
    return lod.as_matrix(to_matrix(raw(sel), token_dims), keep_float=True).contiguous()


def tensor(sel: Selected, token_dims: int | None = None) -> torch.Tensor:
    """``[tokens, channels]`` view of the selection on its token axis (``token_dims`` leading
    dims are tokens; default the stored axis). bf16 is kept: pooling is exact in it."""
    k = axis(sel).token_dims if token_dims is None else token_dims
    return _tensor(_root(), sel, min(k, raw(sel).dim()))


@st.cache_data(show_spinner=False, max_entries=16, ttl=30)
def _tool_stats(root: str, run_id: str) -> pd.DataFrame:
    from studio_backend.dumps.query import tool_stats

    return tool_stats(workspace(), run_id)


def tool_stats(run_id: str) -> pd.DataFrame:
    """Statistics the dump tool wrote (all a statistics-only dump holds)."""
    return _tool_stats(_root(), run_id)


def save_axis(run_id: str, module_regex: str, token_dims: int | None) -> dict[str, int]:
    """Store an override (None clears it) and recompute the statistics it changed."""
    from studio_backend.dumps import axis_store

    counts = axis_store.set_override(workspace(), run_id, module_regex, token_dims)
    axis_store.restat(workspace(), run_id)
    _axis.clear()
    _layer_stats.clear()
    _persistence.clear()
    return counts


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


@st.cache_data(show_spinner=False, max_entries=16, ttl=30)
def _default_tokenizer(root: str, run_id: str) -> str:
    from studio_backend.analysis.run_model import tokenizer_dir

    return tokenizer_dir(workspace(), run_id) or ""


def default_tokenizer(run_id: str) -> str:
    """The run's known tokenizer folder (its launch's model, or config's ``_name_or_path``), or ""."""
    return _default_tokenizer(_root(), run_id)


def grid(x: torch.Tensor, **kwargs) -> lod.Grid:
    return lod.build_grid(x, **kwargs)


def channels_of(spec: str, n: int) -> np.ndarray | None:
    return None if not spec.strip() else lod.parse_channels(spec, n)


def sort_columns(g: lod.Grid) -> lod.Grid:
    """``g`` with its columns ordered by absmax, largest first (ties keep channel order).

    A column's absmax is the max over tokens of ``|raw|``, the pooled block extremes, so it is
    the largest |x| of the channels the column holds. The browser sorts the same way
    (studio_ui/components/surface/frontend/surface.js), so a toggle there and the server agree.
    Each cell keeps its real token and channel; the channel axis becomes the rank position.
    """
    order = np.argsort(-np.abs(g.raw).max(axis=0), kind="stable")
    bc = max(1, math.ceil(g.source_shape[1] / g.raw.shape[1]))
    return dataclasses.replace(
        g,
        values=g.values[:, order],
        raw=g.raw[:, order],
        tokens=g.tokens[:, order],
        channels=g.channels[:, order],
        channel_axis=np.arange(g.raw.shape[1]) * bc,
    )


# Per-tensor caches: a toggle or a module switch back recomputes nothing that is already known.
# cache_resource (no copy on a hit): grids are frozen and never written to. The pooled grid is
# cached without the view transform: |x| and log are monotone in |x|, so they apply to the
# pooled cells (exactly what pooling after them gives), and sorting orders the pooled columns
# (sort_columns), so no toggle pools again.
@st.cache_resource(show_spinner=False, max_entries=24)
def _surface_grid(root: str, sel: Selected, token_dims: int, chan_spec: str, **kw) -> lod.Grid:
    if remote(sel):  # pooled on the tensor's node: only the grid comes here
        return on_node("grid", sel, token_dims, channels=chan_spec, **kw)
    x = tensor(sel, token_dims)
    return lod.build_grid(x, channels=channels_of(chan_spec, x.shape[1]), **kw)


def surface_grid(
    sel: Selected, token_dims: int, chan_spec: str = "", *, absolute: bool = False,
    log: bool = False, sort_channels: bool = False, **kw,
) -> lod.Grid:  # fmt: skip
    """The pooled surface grid of a selection (keywords: build_grid's, channels as a spec);
    ``sort_channels`` orders the pooled columns by absmax (sort_columns)."""
    g = _surface_grid(_root(), sel, token_dims, chan_spec.strip(), **kw)
    if absolute or log:
        g = dataclasses.replace(g, values=lod.transform(g.raw, absolute=absolute, log=log))
    return sort_columns(g) if sort_channels else g


@st.cache_data(show_spinner=False, max_entries=32)
def _summary(root: str, sel: Selected, token_dims: int, t0: int, t1: int) -> outliers.Summary:
    if remote(sel):
        return on_node("summary", sel, token_dims, t0=t0, t1=t1)
    return outliers.summarize(tensor(sel, token_dims)[t0:t1])


def summary(sel: Selected, token_dims: int, t0: int, t1: int) -> outliers.Summary:
    """Outlier statistics of tokens ``t0:t1`` of the selection."""
    return _summary(_root(), sel, token_dims, t0, t1)


@st.cache_data(show_spinner=False, max_entries=64, ttl=30)
def _not_stitched(root: str, run_id: str, step: int, pattern, io) -> pd.DataFrame:
    return source.not_stitched(workspace(), run_id, step=step, pattern=pattern, io=io)


def not_stitched(run_id: str, step: int, pattern: str | None, io: str) -> pd.DataFrame:
    """Tensors of the selection that did not stitch (named on the page, never drawn)."""
    return _not_stitched(_root(), run_id, step, pattern, io)


@st.cache_data(show_spinner=False, max_entries=32, ttl=30)
def _ranked(root: str, run_id: str, by: str, step: int | None, limit: int) -> pd.DataFrame:
    from studio_backend.analysis import finder

    return finder.rank(workspace(), run_id, by=by, step=step, limit=limit)


def ranked(run_id: str, by: str, step: int | None, limit: int) -> pd.DataFrame:
    """The outlier finder's ranking (stored statistics only)."""
    return _ranked(_root(), run_id, by, step, limit)
