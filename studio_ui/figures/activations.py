"""Plotly figures of activations: WebGL 3D surfaces, profiles, kurtosis lines, persistence maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio_backend.analysis.lod import Grid
from studio_ui.figures.style import DIVERGING_GREY, value_label

DIVERGING = "RdBu_r"
SEQUENTIAL = "Viridis"

# Plotly.js syncs nothing between scenes by itself: this script (used in exported HTML and in
# the page's comparison iframe) copies the camera of the scene being dragged to the others.
SYNC_CAMERAS_JS = """
var gd = document.getElementById('{plot_id}');
var syncing = false;
gd.on('plotly_relayout', function(ev) {
  if (syncing) return;
  var key = Object.keys(ev).find(function(k) { return /^scene\\d*\\.camera$/.test(k); });
  if (!key) return;
  var update = {};
  Object.keys(gd._fullLayout).forEach(function(k) {
    if (/^scene\\d*$/.test(k) && k + '.camera' !== key) update[k + '.camera'] = ev[key];
  });
  syncing = true;
  Plotly.relayout(gd, update).then(function() { syncing = false; });
});
"""


def _hover(
    grid: Grid, token_text: Sequence[str] | None, absolute: bool, log: bool, sort: bool
) -> tuple[np.ndarray, str]:
    """customdata and hovertemplate: exact token, channel and raw value of each cell's extreme.

    plotly.js looks surface customdata / text up as ``data[column][row]`` (the transpose of
    ``z[row][column]``; surface handlePick sets ``index = [x index, y index]``), so both are
    built transposed. float32 holds integers < 2**24 exactly and halves the payload.
    """
    transformed = absolute or log
    # The raw value rides along only when z is transformed (else z is the value: less payload).
    fields = (grid.tokens, grid.channels) + ((grid.raw,) if transformed else ())
    custom = np.stack([np.asarray(f, dtype=np.float32).T for f in fields], axis=-1)
    text = " %{text}" if token_text is not None else ""
    rank = " (rank %{x})" if sort else ""
    value = "%{customdata[2]:.4g}" if transformed else "%{z:.4g}"
    shown = f"<br>{value_label(absolute, log)} %{{z:.4g}}" if transformed else ""
    tmpl = (
        f"token %{{customdata[0]}}{text}<br>channel %{{customdata[1]}}{rank}"
        f"<br>value {value}{shown}<extra></extra>"
    )
    return np.ascontiguousarray(custom), tmpl


def _token_text(grid: Grid, token_text: Sequence[str] | None) -> np.ndarray | None:
    if token_text is None:
        return None
    texts = np.asarray([repr(t) for t in token_text], dtype=object)
    return texts[grid.tokens.T]  # transposed like customdata (see _hover)


LIGHTING = {"ambient": 0.55, "diffuse": 0.7, "specular": 0.15, "roughness": 0.6, "fresnel": 0.1}


def surface_trace(
    grid: Grid,
    *,
    token_text: Sequence[str] | None = None,
    absolute: bool = False,
    log: bool = False,
    scene: str = "scene",
    showscale: bool = True,
    colorscale: str | None = None,
    cmid: float | None = None,
    sorted_channels: bool = False,
) -> go.Surface:
    """One WebGL surface: x = channel, y = token, z = value (pooled grid, exact hover)."""
    custom, tmpl = _hover(grid, token_text, absolute, log, sorted_channels)
    diverging = not absolute
    return go.Surface(
        z=grid.values.astype(np.float32),
        x=grid.channel_axis,
        y=grid.token_axis,
        customdata=custom,
        text=_token_text(grid, token_text),
        hovertemplate=tmpl,
        colorscale=colorscale or (DIVERGING_GREY if diverging else SEQUENTIAL),
        lighting=LIGHTING,
        cmid=(0.0 if diverging else None) if cmid is None else cmid,
        showscale=showscale,
        colorbar={"title": {"text": value_label(absolute, log)}, "len": 0.7},
        scene=scene,
    )


def _scene(grid: Grid, absolute: bool, log: bool, sorted_channels: bool) -> dict:
    return {
        "xaxis": {"title": {"text": "channel rank" if sorted_channels else "channel"}},
        "yaxis": {"title": {"text": "token"}},
        "zaxis": {"title": {"text": value_label(absolute, log)}},
        # Low elevation: walls of negative outliers below the surface stay in view.
        "camera": {"eye": {"x": 1.55, "y": -1.75, "z": 0.45}},
        "aspectmode": "manual",
        "aspectratio": {"x": 1.6, "y": 1.0, "z": 0.7},
    }


def surface_figure(
    grid: Grid,
    *,
    title: str = "",
    token_text: Sequence[str] | None = None,
    absolute: bool = False,
    log: bool = False,
    sorted_channels: bool = False,
    height: int = 650,
) -> go.Figure:
    """The token x channel x value surface of one tensor."""
    fig = go.Figure(
        surface_trace(
            grid, token_text=token_text, absolute=absolute, log=log, sorted_channels=sorted_channels
        ),
        layout={
            "title": {"text": _title(title, grid)},
            "height": height,
            "margin": {"l": 0, "r": 0, "t": 50, "b": 0},
            "scene": _scene(grid, absolute, log, sorted_channels),
        },
    )
    return fig


def _title(title: str, grid: Grid) -> str:
    t, c = grid.source_shape
    note = (
        f"{t} x {c}, shown as {grid.values.shape[0]} x {grid.values.shape[1]} (max-|x| pooled)"
        if grid.pooled
        else f"{t} x {c}"
    )
    return f"{title}<br><sup>{note}</sup>" if title else note


# Compare figure layout, in fractions of the figure's width: three scenes, each followed by a
# gap that holds a colour bar (A and B share one, right of B; the difference has its own), so
# no colour bar, its tick labels or its title ever lies over a plot.
COMPARE_SCENES = ((0.0, 0.28), (0.285, 0.565), (0.675, 0.915))
COMPARE_BARS = (0.57, 0.92)  # left edge of the A/B bar and of the difference's bar
COMPARE_BAR_PX = 12  # bar thickness; its labels take the rest of the gap


def compare_figure(
    a: Grid,
    b: Grid,
    diff: Grid,
    *,
    labels: tuple[str, str] = ("A", "B"),
    absolute: bool = False,
    log: bool = False,
    sorted_channels: bool = False,
    height: int = 420,
) -> go.Figure:
    """A and B side by side on one camera, plus the difference B - A (pooled from full res)."""
    # A and B share one colour range so equal heights mean equal values.
    lim = float(max(np.abs(a.values).max(), np.abs(b.values).max()))
    bar = {"thickness": COMPARE_BAR_PX, "len": 0.8, "y": 0.45, "xanchor": "left",
           "title": {"side": "right"}}  # fmt: skip
    fig = go.Figure()
    for i, g in enumerate((a, b)):
        tr = surface_trace(g, absolute=absolute, log=log, scene=f"scene{i + 1 if i else ''}")
        tr.update(cmin=-lim if not absolute else 0, cmax=lim, cmid=None, showscale=i == 1)
        tr.colorbar.update(bar | {"x": COMPARE_BARS[0]})
        tr.colorbar.title.update(text=f"{labels[0]}, {labels[1]}: {value_label(absolute, log)}")
        fig.add_trace(tr)
    d = surface_trace(diff, scene="scene3", colorscale="PuOr_r", showscale=True)
    d.colorbar.update(bar | {"x": COMPARE_BARS[1]})
    d.colorbar.title.update(text=f"{labels[1]} - {labels[0]}")
    fig.add_trace(d)
    # Each scene is a third of the width: the camera steps back so the whole surface fits.
    far = {"eye": {"x": 2.5, "y": -2.8, "z": 0.8}}
    scene = _scene(a, absolute, log, sorted_channels) | {"camera": far}
    titles = (labels[0], labels[1], f"{labels[1]} - {labels[0]}")
    fig.update_layout(
        height=height,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        annotations=[
            {
                "text": t,
                "x": (x0 + x1) / 2,
                "y": 1.0,
                "xref": "paper",
                "yref": "paper",
                "xanchor": "center",
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 16},
            }
            for t, (x0, x1) in zip(titles, COMPARE_SCENES, strict=True)
        ],  # fmt: skip
        **{
            name: sc | {"domain": {"x": list(dom), "y": [0.0, 1.0]}}
            for name, sc, dom in zip(
                ("scene", "scene2", "scene3"),
                (scene, scene, _scene(diff, False, False, sorted_channels) | {"camera": far}),
                COMPARE_SCENES,
                strict=True,
            )
        },
    )
    return fig


def profile_figure(absmax: np.ndarray, *, title: str = "", top: int = 10) -> go.Figure:
    """Per-channel absmax over tokens (WebGL line), top channels marked."""
    ch = np.arange(absmax.size)
    fig = go.Figure(go.Scattergl(x=ch, y=absmax, mode="lines", name="absmax", line={"width": 1}))
    order = np.argsort(-absmax, kind="stable")[:top]
    fig.add_trace(
        go.Scattergl(
            x=order,
            y=absmax[order],
            mode="markers+text",
            text=[str(c) for c in order],
            textposition="top center",
            marker={"color": "crimson", "size": 7},
            name=f"top {top}",
        )
    )
    fig.update_layout(
        title={"text": title or "Per-channel absmax over tokens"},
        xaxis_title="channel",
        yaxis_title="max |x|",
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        showlegend=False,
    )
    return fig


# Mantissas tried per decade, sparsest first, until the data's range holds enough ticks.
_LOG_MANTISSAS = (
    (1,),
    (1, 2, 5),
    (1, 2, 3, 4, 5, 6, 8),
    (1, 1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 7, 8, 9),
)


def log_ticks(lo: float, hi: float, *, at_least: int = 4) -> tuple[list[float], list[str]]:
    """Tick values and labels for a log axis spanning [lo, hi] (both > 0), written as the true
    values ("20", "30", "1,000"): Plotly's own labels for ticks inside a decade are the
    mantissa alone ("2", "3", "4" for 20, 30, 40)."""
    e0, e1 = int(np.floor(np.log10(lo))), int(np.floor(np.log10(hi)))
    vals: list[float] = []
    for mantissas in _LOG_MANTISSAS:
        vals = [
            float(f"{m * 10.0**e:.6g}")
            for e in range(e0, e1 + 1)
            for m in mantissas
            if lo <= float(f"{m * 10.0**e:.6g}") <= hi
        ]
        if len(vals) >= at_least:
            break
    if not vals:  # a range inside one gap of the densest table: its two ends
        vals = sorted({float(f"{lo:.3g}"), float(f"{hi:.3g}")})
    return vals, [f"{v:,.0f}" if v >= 1000 else f"{v:g}" for v in vals]


def kurtosis_figure(rows: pd.DataFrame) -> go.Figure:
    """Kurtosis across layers, one line per module kind (columns: layer, kind, kurtosis)."""
    fig = go.Figure()
    for kind, part in rows.sort_values("layer").groupby("kind", sort=True):
        fig.add_trace(
            go.Scatter(x=part["layer"], y=part["kurtosis"], mode="lines+markers", name=kind)
        )
    yaxis: dict = {"title": {"text": "kurtosis (log scale)"}, "type": "log"}
    k = pd.to_numeric(rows["kurtosis"], errors="coerce")
    k = k[np.isfinite(k) & (k > 0)]
    if not k.empty:
        # A little room above and below the data (in log units) so no marker sits on an edge.
        lo, hi = float(k.min()), float(k.max())
        pad = max(0.05 * (np.log10(hi) - np.log10(lo)), 0.02)
        lo_r, hi_r = np.log10(lo) - pad, np.log10(hi) + pad
        vals, text = log_ticks(10**lo_r, 10**hi_r)
        yaxis |= {"range": [lo_r, hi_r], "tickmode": "array", "tickvals": vals, "ticktext": text}
    layers = pd.to_numeric(rows["layer"], errors="coerce").dropna()
    # Whole layers only (Plotly's own ticks on 3 layers read 0, 0.5, 1, 1.5, 2).
    step = max(1, int(np.ceil((layers.max() - layers.min() + 1) / 16))) if len(layers) else 1
    fig.update_layout(
        title={"text": "Kurtosis across layers (Gaussian = 3)"},
        xaxis={
            "title": {"text": "layer"},
            "tickmode": "linear",
            "dtick": step,
            "tick0": float(layers.min()) if len(layers) else 0.0,
        },  # fmt: skip
        yaxis=yaxis,
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def persistence_figure(matrix: pd.DataFrame, *, title: str = "") -> go.Figure:
    """Layer x channel heatmap of absmax for the top-K channels (index: layer, columns: channel)."""
    fig = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(),
            x=[str(c) for c in matrix.columns],
            y=matrix.index.to_numpy(),
            colorscale=SEQUENTIAL,
            colorbar={"title": {"text": "max |x|"}},
            hovertemplate="layer %{y}<br>channel %{x}<br>max |x| %{z:.4g}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title or "Outlier-channel persistence"},
        xaxis={"title": "channel", "type": "category"},
        # whole layers only (Plotly's own ticks on 3 layers read -0.5, 0, 0.5, ...)
        yaxis={
            "title": "layer",
            "autorange": "reversed",
            "tickmode": "linear",
            "tick0": float(matrix.index.min()) if len(matrix) else 0.0,
            "dtick": max(1, int(np.ceil(len(matrix.index) / 16))),
        },  # fmt: skip
        height=360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
    )
    return fig


def figure_html(fig: go.Figure, *, sync_cameras: bool = False) -> str:
    """Self-contained HTML (plotly.js inlined: works offline), cameras synced if asked."""
    return fig.to_html(
        include_plotlyjs=True,
        full_html=True,
        post_script=SYNC_CAMERAS_JS if sync_cameras else None,
    )


def tool_stats_figure(stats: pd.DataFrame, *, height: int = 420) -> go.Figure:
    """Statistics a dump tool wrote (statistics-only dumps): max and min per tensor, in dump
    order, with the L2 norm on a second axis; hover names the module, io and index."""
    df = stats.reset_index(drop=True)
    label = (
        df["module"] + " " + df["io"] + "[" + df["idx"].astype(str) + "]"
        + df["arg_name"].fillna("").map(lambda a: f" {a}" if a else "")
    )  # fmt: skip
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for col, color in (("max", "#d62728"), ("min", "#1f77b4")):
        fig.add_trace(
            go.Scatter(x=df.index, y=df[col], mode="markers", name=col, text=label,
                       marker={"color": color, "size": 6},
                       hovertemplate="%{text}<br>" + col + " %{y:.4g}<extra></extra>"),
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=df.index, y=df["norm"], mode="lines", name="L2 norm", text=label,
                   line={"color": "#7f7f7f", "width": 1},
                   hovertemplate="%{text}<br>norm %{y:.4g}<extra></extra>"),
        secondary_y=True,
    )  # fmt: skip
    fig.update_layout(
        height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="Tool statistics per tensor (dump order)", xaxis_title="tensor #",
    )  # fmt: skip
    fig.update_yaxes(title_text="max / min", secondary_y=False)
    fig.update_yaxes(title_text="L2 norm", secondary_y=True)
    return fig
