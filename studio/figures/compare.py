"""Figures of the Compare page: the tensor x token divergence heatmap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

FLOOR = 1e-20  # log10 of an exact zero is drawn at this value


def heatmap_figure(
    mat: pd.DataFrame, thresholds: pd.Series, *, title: str = "", metric: str = "rel_diff"
) -> go.Figure:
    """log10(per-token metric), tensors in forward order top to bottom, tokens left to right;
    blank cells are bit-identical.

    Cells over their tensor's threshold are outlined (a second, transparent trace), so which
    tokens part first reads straight off the picture; hover gives the exact value.
    """
    vals = mat.to_numpy(dtype=float)
    # bit-identical cells (0) are left blank: log10 has no value for them
    with np.errstate(divide="ignore"):
        z = np.where(vals > 0, np.log10(np.clip(vals, FLOOR, None)), np.nan)
    over = vals > thresholds.reindex(mat.index).to_numpy()[:, None]
    labels = list(mat.index)
    tokens = [int(c) for c in mat.columns]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=tokens, y=labels, colorscale="Inferno", zmin=-16, zmax=0,
            colorbar={"title": f"log10 {metric}"},
            customdata=vals,
            hovertemplate="%{y}<br>token %{x}<br>" + metric + " %{customdata:.3e}<extra></extra>",
        )
    )  # fmt: skip
    ys, xs = np.nonzero(over)
    if len(ys):
        fig.add_trace(
            go.Scatter(
                x=[tokens[i] for i in xs], y=[labels[i] for i in ys], mode="markers",
                marker={"symbol": "square-open", "size": 12, "color": "#22d3ee",
                        "line": {"width": 2}},
                name="over threshold", hoverinfo="skip",
            )
        )  # fmt: skip
    fig.update_layout(
        title=title,
        height=max(360, 18 * len(labels) + 120),
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": "token", "dtick": 1 if len(tokens) <= 40 else None},
        yaxis={"autorange": "reversed", "type": "category"},
        showlegend=False,
    )
    return fig
