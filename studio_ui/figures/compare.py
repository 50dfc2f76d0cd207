"""Figures of the Compare page: the tensor x token divergence heatmap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.colors as pc
import plotly.graph_objects as go

LOW, HIGH = -16, 0  # log10 range of the colour scale; bit-identical cells sit below it, grey
CLICKABLE = 40_000  # cells up to which every cell gets a clickable marker
_INFERNO = pc.sequential.Inferno
_STEP = 1 / (HIGH - LOW + 1)
COLORSCALE = [[0.0, "#d1d5db"], [_STEP * 0.99, "#d1d5db"]] + [
    [_STEP + (1 - _STEP) * i / (len(_INFERNO) - 1), c] for i, c in enumerate(_INFERNO)
]


def heatmap_figure(
    mat: pd.DataFrame, thresholds: pd.Series, *, title: str = "", metric: str = "rel_diff"
) -> go.Figure:
    """log10(per-token metric), tensors in forward order top to bottom, tokens left to right;
    grey cells are bit-identical.

    Cells over their tensor's threshold are outlined (a second, transparent trace), so which
    tokens part first reads straight off the picture; hover gives the exact value.
    """
    vals = mat.to_numpy(dtype=float)
    # bit-identical cells (0) get the grey below the scale (log10 has no value for them); they
    # stay clickable
    with np.errstate(divide="ignore"):
        z = np.where(vals > 0, np.log10(np.clip(vals, 10.0**LOW, None)), LOW - 1)
    over = vals > thresholds.reindex(mat.index).to_numpy()[:, None]
    labels = list(mat.index)
    tokens = [int(c) for c in mat.columns]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=tokens, y=labels, colorscale=COLORSCALE, zmin=LOW - 1, zmax=HIGH,
            colorbar={"title": f"log10 {metric}"},
            customdata=vals,
            hovertemplate="%{y}<br>token %{x}<br>" + metric + " %{customdata:.3e}<extra></extra>",
        )
    )  # fmt: skip
    if vals.size <= CLICKABLE:
        # Heatmaps cannot be selected in Plotly: an invisible marker on every cell can, so a
        # click on a cell reaches the page (st.plotly_chart on_select) with its tensor and token.
        gy, gx = np.meshgrid(np.arange(len(labels)), np.arange(len(tokens)), indexing="ij")
        fig.add_trace(
            go.Scatter(
                x=[tokens[i] for i in gx.ravel()], y=[labels[i] for i in gy.ravel()],
                mode="markers", marker={"size": 14, "opacity": 0.0, "symbol": "square"},
                customdata=vals.ravel(), name="cells",
                hovertemplate="%{y}<br>token %{x}<br>" + metric + " %{customdata:.3e}"
                "<extra></extra>",
            )
        )  # fmt: skip
        fig.data[0].hoverinfo = "skip"
        fig.data[0].hovertemplate = None
    ys, xs = np.nonzero(over)
    if len(ys):
        fig.add_trace(
            go.Scatter(
                x=[tokens[i] for i in xs], y=[labels[i] for i in ys], mode="markers",
                marker={"symbol": "square-open", "size": 12, "color": "#22d3ee",
                        "line": {"width": 2}},
                name="over threshold", hoverinfo="skip",
                unselected={"marker": {"opacity": 1}},
            )
        )  # fmt: skip
    fig.update_layout(
        title=title,
        height=max(360, 18 * len(labels) + 120),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": "token", "dtick": 1 if len(tokens) <= 40 else None},
        yaxis={"autorange": "reversed", "type": "category"},
        showlegend=False,
        clickmode="event+select",
    )
    return fig
