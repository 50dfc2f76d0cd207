"""Plotly figures of expert load (data in, figure out; no workspace access)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from studio_ui import theme
from studio_ui.figures.style import whole_ticks


def heatmap(
    matrix: np.ndarray, layers: list[int], x_label: str, *, log: bool = False, title: str = ""
) -> go.Figure:
    """Layer x (expert|device) load; ``log`` colours by log10(1 + tokens), hover shows tokens."""
    z = np.log10(1 + matrix) if log else matrix
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(matrix.shape[1])),
            y=[str(layer) for layer in layers],
            customdata=matrix,
            colorscale=theme.SEQUENTIAL,
            colorbar={"title": "log10(1+tokens)" if log else "tokens"},
            hovertemplate=f"layer %{{y}}, {x_label} %{{x}}<br>tokens %{{customdata:,.0f}}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=x_label,
        xaxis=whole_ticks(0, matrix.shape[1] - 1),
        yaxis_title="layer",
        yaxis={"type": "category", "autorange": "reversed"},
        height=max(260, 22 * len(layers) + 140),
        margin={"l": 50, "r": 20, "t": 40 if title else 20, "b": 40},
    )
    return fig


def evolution(df: pd.DataFrame, title: str = "") -> go.Figure:
    """Balancedness (mean/max) and max/mean over steps."""
    fig = go.Figure()
    fig.add_scatter(x=df["step"], y=df["balancedness"], name="balancedness (mean/max)",
                    mode="lines+markers", line={"color": theme.ACCENT})  # fmt: skip
    fig.add_scatter(x=df["step"], y=df["peak_to_avg"], name="max/mean", yaxis="y2",
                    mode="lines+markers", line={"color": theme.WARN})  # fmt: skip
    fig.update_layout(
        title=title,
        xaxis={"title": "step"}
        | (whole_ticks(df["step"].min(), df["step"].max()) if len(df) else {}),
        yaxis={"title": "balancedness", "rangemode": "tozero"},
        # Its own round ticks ("auto"), no grid: synced to the left axis's grid the ticks read
        # 0.921, 1.137, 1.353 ... (plotly's default for an overlaying axis).
        yaxis2={
            "title": "max/mean",
            "overlaying": "y",
            "side": "right",
            "tickmode": "auto",
            "showgrid": False,
        },  # fmt: skip
        height=320,
        margin={"l": 50, "r": 50, "t": 40 if title else 20, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    return fig
