"""Plotly figures for sparse-attention traces: data in, figure out (no queries here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from studio_ui.figures.style import whole_ticks
from studio_ui.theme import ACCENT, SEQUENTIAL, WARN


def _layout(fig: go.Figure, title: str, x: str, y: str, height: int = 360) -> go.Figure:
    fig.update_layout(
        title=title, xaxis_title=x, yaxis_title=y, height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )  # fmt: skip
    return fig


def hot_spot_heatmap(
    df: pd.DataFrame, layers_in_range: int, prefix_blocks: int = 0, title: str = ""
) -> go.Figure:
    """Block (y) x decode step (x); colour = number of layers that selected the block."""
    steps = np.sort(df["step_idx"].unique())
    blocks = np.arange(int(df["block_id"].max()) + 1) if len(df) else np.arange(0)
    grid = np.zeros((len(blocks), len(steps)))
    col = {s: i for i, s in enumerate(steps)}
    grid[df["block_id"].to_numpy(), [col[s] for s in df["step_idx"]]] = df["layers"].to_numpy()
    fig = go.Figure(
        go.Heatmap(
            z=np.where(grid > 0, grid, np.nan), x=steps, y=blocks, colorscale=SEQUENTIAL,
            zmin=0, zmax=max(layers_in_range, 1),
            # a count of layers: whole ticks when few (Plotly's own read 0.5, 1.5, 2.5)
            colorbar={"title": "layers",
                      **(whole_ticks(0, layers_in_range) if layers_in_range <= 16 else {})},
            hovertemplate="step %{x}<br>block %{y}<br>%{z} layers<extra></extra>",
        )
    )  # fmt: skip
    if prefix_blocks:
        fig.add_hline(
            y=prefix_blocks - 0.5, line={"color": WARN, "dash": "dash"},
            annotation_text=f"prefix-cached blocks < {prefix_blocks}",
        )  # fmt: skip
    fig = _layout(fig, title or "Hot spots", "decode step (position)", "KV block", 460)
    if len(steps):  # whole decode steps and blocks (Plotly's own ticks read 394.5, 395.5)
        fig.update_xaxes(**whole_ticks(steps.min(), steps.max()))
        fig.update_yaxes(**whole_ticks(0, len(blocks) - 1))
    return fig


def bar(x, y, title: str, xt: str, yt: str, color: str = ACCENT) -> go.Figure:
    fig = _layout(go.Figure(go.Bar(x=x, y=y, marker_color=color)), title, xt, yt)
    v = np.asarray(y, dtype=float)
    if v.size and np.all(v == np.round(v)) and 0 < v.max() <= 16:  # small counts: 0, 1, 2 ...
        fig.update_yaxes(**whole_ticks(0, v.max()))
    return fig


def popularity_cdf(df: pd.DataFrame, title: str = "Block popularity CDF") -> go.Figure:
    """Share of all touches covered by the most popular share of blocks."""
    fig = go.Figure(
        go.Scatter(x=df["block_share"], y=df["touch_share"], mode="lines", line={"color": ACCENT})
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"dash": "dot", "color": "#8a8886"},
            name="uniform",
        )  # fmt: skip
    )
    fig.update_layout(showlegend=False)
    return _layout(fig, title, "share of blocks (most popular first)", "share of touches")


def hit_ratio_curve(df: pd.DataFrame, title: str = "LRU hit ratio vs capacity") -> go.Figure:
    fig = go.Figure(
        go.Scatter(
            x=df["capacity_blocks"], y=df["hit_ratio"], mode="lines+markers", line={"color": ACCENT}
        )  # fmt: skip
    )
    fig.update_yaxes(range=[0, 1])
    return _layout(fig, title, "cache capacity (blocks)", "hit ratio")


def jaccard_box(steps: pd.DataFrame, layers: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Box(y=steps["jaccard"], name="consecutive steps (same layer)"))
    fig.add_trace(go.Box(y=layers["jaccard"], name="adjacent layers (same step)"))
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(showlegend=False)
    return _layout(fig, "Jaccard overlap of selected blocks", "", "Jaccard")


def jaccard_by_layer(steps: pd.DataFrame) -> go.Figure:
    g = steps.groupby("layer_id")["jaccard"].mean().reset_index()
    return bar(
        g["layer_id"], g["jaccard"], "Mean step-to-step Jaccard per layer", "layer", "Jaccard"
    )


def tier_bars(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure(go.Bar(x=df["tier"], y=df["blocks"], marker_color=ACCENT, name="blocks"))
    return _layout(fig, "kv_fetch: blocks read per tier", "tier", "blocks")
