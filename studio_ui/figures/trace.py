"""Figures for the Trace page: pure functions from analysis DataFrames to Plotly figures."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from studio_ui import theme

FAMILY_COLOURS = {
    "attention": "#0f6cbd",
    "gemm": "#8764b8",
    "norm": "#107c10",
    "rotary": "#00b7c3",
    "activation": "#c19c00",
    "moe": "#ca5010",
    "communication": "#c50f1f",
    "other": "#8a8886",
}


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def class_counts_bar(df: pd.DataFrame) -> go.Figure:
    """Calls per module class (``traces.class_counts``)."""
    fig = go.Figure(
        go.Bar(x=df["calls"], y=df["module_class"], orientation="h", marker_color=theme.ACCENT)
    )
    fig.update_layout(
        title="Module calls per class", xaxis_title="calls", yaxis={"autorange": "reversed"},
        height=max(260, 26 * len(df) + 100), margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )  # fmt: skip
    return fig


def top_bar(df: pd.DataFrame, title: str) -> go.Figure:
    """Self and total time of the top kernels/ops (``analysis.top``), in the table's order."""
    labels = [_short(n) for n in df["name"]]
    custom = df[["calls", "avg_us", "share", "self_us", "total_us"]].to_numpy()
    hover = (
        "%{hovertext}<br>self %{customdata[3]:.1f} µs (%{customdata[2]:.1%})"
        "<br>total %{customdata[4]:.1f} µs<br>calls %{customdata[0]}"
        "<br>avg total %{customdata[1]:.2f} µs<extra></extra>"
    )
    bars = [
        go.Bar(name="self", x=df["self_us"], y=labels, orientation="h",
               marker_color=theme.ACCENT, customdata=custom, hovertext=df["name"],
               hovertemplate=hover),
    ]  # fmt: skip
    nested = bool((df["total_us"] > df["self_us"]).any())
    if nested:  # kernels (and leaf ops) have self = total: one bar says it all
        bars.append(
            go.Bar(name="total (with children)", x=df["total_us"], y=labels, orientation="h",
                   marker_color=theme.ACCENT, opacity=0.35, customdata=custom,
                   hovertext=df["name"], hovertemplate=hover)
        )  # fmt: skip
    fig = go.Figure(bars)
    fig.update_layout(
        title=title, xaxis_title="time (µs)", yaxis={"autorange": "reversed"}, barmode="group",
        height=max(280, (34 if nested else 24) * len(df) + 120),
        margin={"l": 10, "r": 10, "t": 60, "b": 40}, showlegend=nested,
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
    )  # fmt: skip
    return fig


def family_bar(df: pd.DataFrame) -> go.Figure:
    """Time per family (``analysis.families``)."""
    colours = [FAMILY_COLOURS.get(f, FAMILY_COLOURS["other"]) for f in df["family"]]
    fig = go.Figure(
        go.Bar(
            x=df["family"], y=df["total_us"], marker_color=colours,
            text=[f"{s:.0%}" for s in df["share"]], textposition="outside",
        )
    )  # fmt: skip
    fig.update_layout(
        title="Time by family", yaxis_title="time (µs, self)", height=340,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )  # fmt: skip
    return fig


def layer_heatmap(df: pd.DataFrame) -> go.Figure:
    """Time per (layer, family) (``analysis.per_layer``); rows outside layers are left out."""
    inside = df.dropna(subset=["layer"])
    grid = inside.pivot_table(
        index="family", columns="layer", values="total_us", aggfunc="sum", fill_value=0.0
    )
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(), x=[f"L{int(c)}" for c in grid.columns], y=list(grid.index),
            colorscale=theme.SEQUENTIAL, colorbar={"title": "µs"},
            hovertemplate="%{y} in %{x}: %{z:.1f} µs<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(
        title="Time per layer and family", xaxis_title="layer", height=120 + 34 * len(grid),
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
    )  # fmt: skip
    return fig


def diff_bar(df: pd.DataFrame, name_a: str, name_b: str, n: int = 20) -> go.Figure:
    """Grouped bars of the largest changes (``diff.diff``): A and B side by side per key."""
    head = df.head(n)
    labels = [_short(str(k)) for k in head["key"]]
    fig = go.Figure(
        [
            go.Bar(name=name_a, x=head["total_us_a"], y=labels, orientation="h",
                   marker_color="#8a8886"),
            go.Bar(name=name_b, x=head["total_us_b"], y=labels, orientation="h",
                   marker_color=theme.ACCENT),
        ]
    )  # fmt: skip
    fig.update_layout(
        barmode="group", title=f"Largest changes: {name_a} → {name_b}",
        xaxis_title="total time (µs)", yaxis={"autorange": "reversed"},
        height=max(300, 40 * len(head) + 120), margin={"l": 10, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.15},
    )  # fmt: skip
    return fig
