"""Figures of the Kernels page: latency bars, speedup, bandwidth, %-of-copy heatmap, throughput.

Inputs are DataFrames of benchmark rows (``studio_backend.bench.results`` plus the published seed 002
rows); each series is named ``run / impl`` and published series are drawn dashed or hatched.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from studio_ui.theme import SEQUENTIAL

PUBLISHED_COLOUR = "#8a8886"
PUBLISHED_SERVE = "Ascend 910B · Qwen3-30B-A3B AWQ, SGLang (seed 002)"
_PALETTE = ("#0f6cbd", "#c50f1f", "#107c10", "#8764b8", "#ca5010", "#038387", "#4f6bed")


def _colour(i: int) -> str:
    return _PALETTE[i % len(_PALETTE)]


def _series(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame, bool]]:
    """(name, rows sorted by batch, published?) per run and implementation."""
    out = []
    for (run, impl), part in df.groupby(["run_name", "impl"], sort=False):
        published = bool((part.get("source") == "published").any()) if "source" in part else False
        out.append((f"{run} / {impl}", part.sort_values("batch"), published))
    return out


def _titled(title: str, where: str) -> str:
    """The chart's title with its devices and shape on a line of their own: on a half-width
    chart one long line was cut off at the device's name."""
    return f"{title}<br><sup>{where}</sup>" if where else title


def _layout(fig: go.Figure, title: str, y: str, log_y: bool = False) -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title="batch size",
        yaxis_title=y,
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 50, "b": 10},
        height=420,
    )
    # categories sorted numerically (series with batch 3 may come after ones without it)
    batches = sorted(
        {int(v) for trace in fig.data for v in (trace.x if trace.x is not None else ())}
    )
    fig.update_xaxes(
        type="category", categoryorder="array", categoryarray=[str(b) for b in batches]
    )
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def latency_bars(df: pd.DataFrame, log_y: bool = False, where: str = "") -> go.Figure:
    """Median latency per batch, side by side per run/impl, with p20-p80 error bars."""
    fig = go.Figure()
    for i, (name, part, published) in enumerate(_series(df)):
        err = None
        if part["p80_us"].notna().all():
            err = {
                "type": "data",
                "array": part["p80_us"] - part["median_us"],
                "arrayminus": part["median_us"] - part["p20_us"],
            }
        fig.add_bar(
            x=part["batch"].astype(str),
            y=part["median_us"],
            name=name + (" (published)" if published else ""),
            error_y=err,
            marker={
                "color": PUBLISHED_COLOUR if published else _colour(i),
                "pattern": {"shape": "/" if published else ""},
                "opacity": 0.55 if published and "reference" in name else 1.0,
            },
        )
    fig.update_layout(barmode="group")
    title = _titled("Latency per MoE layer (median, p20-p80)", where)
    return _layout(fig, title, "latency (us)", log_y)


def speedup_line(df: pd.DataFrame) -> go.Figure:
    """Speedup of each non-reference path over its run's reference, per batch."""
    fig = go.Figure()
    fused = df[df["impl"] != "reference"]
    for i, (name, part, published) in enumerate(_series(fused)):
        fig.add_scatter(
            x=part["batch"].astype(str),
            y=part["speedup"],
            mode="lines+markers",
            name=name + (" (published)" if published else ""),
            line={
                "color": PUBLISHED_COLOUR if published else _colour(i),
                "dash": "dash" if published else "solid",
            },
        )
    fig.add_hline(y=1.0, line={"color": "#605e5c", "dash": "dot"}, annotation_text="reference")
    return _layout(fig, "Speedup over the reference (x)", "speedup (x)")


def bandwidth_chart(df: pd.DataFrame, where: str = "") -> go.Figure:
    """Achieved GB/s (minimum bytes / latency) with the measured-copy and datasheet lines."""
    fig = go.Figure()
    for i, (name, part, published) in enumerate(_series(df)):
        fig.add_scatter(
            x=part["batch"].astype(str),
            y=part["gbps"],
            mode="lines+markers",
            name=name + (" (published)" if published else ""),
            line={
                "color": PUBLISHED_COLOUR if published else _colour(i),
                "dash": "dash" if published else "solid",
            },
        )
    lines = df.drop_duplicates("run_name")
    for _, run in lines.iterrows():
        if pd.notna(run.get("copy_gbps")):
            fig.add_hline(
                y=run["copy_gbps"], line={"color": "#107c10", "dash": "dot"},
                annotation_text=f"measured copy, {run['run_name']}: {run['copy_gbps']:.0f} GB/s",
                annotation_position="top left",
            )  # fmt: skip
        if pd.notna(run.get("datasheet_gbps")):
            fig.add_hline(
                y=run["datasheet_gbps"], line={"color": "#c19c00", "dash": "dash"},
                annotation_text=f"datasheet, {run['device_name']}: {run['datasheet_gbps']:.0f} GB/s",
                annotation_position="top right",
            )  # fmt: skip
    title = _titled("Achieved bandwidth (minimum bytes / median latency)", where)
    return _layout(fig, title, "GB/s")


def devices(df: pd.DataFrame) -> str:
    """The devices of ``df``'s rows, sorted and joined: every one is named in a title."""
    if "device_name" not in df or df.empty:
        return ""
    return " / ".join(sorted({str(d) for d in df["device_name"].dropna().unique()}))


def pct_copy_heatmap(df: pd.DataFrame) -> go.Figure:
    """Shape (preset, routing, impl) x batch: % of the copy bandwidth measured in the same run.

    With several runs each gets rows of its own (the run's name first): a median across
    devices would mean nothing."""
    data = df[df["pct_copy"].notna()].copy()
    data["shape"] = data["preset"] + " · " + data["routing"] + " · " + data["impl"]
    if data["run_name"].nunique() > 1:
        data["shape"] = data["run_name"] + " · " + data["shape"]
    grid = data.pivot_table(index="shape", columns="batch", values="pct_copy", aggfunc="median")
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[str(c) for c in grid.columns],
            y=list(grid.index),
            colorscale=SEQUENTIAL,
            zmin=0,
            colorbar={"title": "% of copy"},
            text=[[f"{v:.1f}%" if pd.notna(v) else "" for v in row] for row in grid.values],
            texttemplate="%{text}",
        )
    )
    where = devices(data)
    fig.update_layout(
        title=_titled("% of measured copy bandwidth", where),
        xaxis_title="batch size", margin={"t": 50},
        height=max(260, 60 + 40 * len(grid.index)),
    )  # fmt: skip
    fig.update_xaxes(type="category")
    return fig


def throughput_chart(
    df: pd.DataFrame, *, title: str | None = "End-to-end decode throughput"
) -> go.Figure:
    """End-to-end decode tokens/s per batch size, per run.

    Measured runs and published series (seed 002: another device and model) get subplots and
    y axes of their own, side by side, never one axis; the measured panel's title names every
    device it holds, the published one its source."""
    published = df["source"] == "published" if "source" in df else pd.Series(False, df.index)
    parts = [
        # Two-line titles: a half-width panel cut one long line off at the device's name.
        (
            f"Measured<br><sup>{devices(df[~published]) or 'this studio'}</sup>",
            df[~published],
            False,
        ),
        (f"Published<br><sup>{PUBLISHED_SERVE}</sup>", df[published], True),
    ]
    parts = [p for p in parts if not p[1].empty]
    fig = make_subplots(
        rows=1, cols=max(len(parts), 1), subplot_titles=[t for t, _, _ in parts],
        horizontal_spacing=0.1,
    )  # fmt: skip
    i = 0
    for col, (_, part_df, is_pub) in enumerate(parts, start=1):
        for run, part in part_df.groupby("run_name", sort=False):
            part = part.sort_values("batch")
            fig.add_scatter(
                x=part["batch"].astype(str), y=part["tokens_per_s"], mode="lines+markers",
                name=run + (" (published)" if is_pub else ""),
                line={
                    "color": PUBLISHED_COLOUR if is_pub else _colour(i),
                    "dash": ("dot" if "native" in run else "dash") if is_pub else "solid",
                },
                row=1, col=col,
            )  # fmt: skip
            i += 1
        batches = sorted({int(b) for b in part_df["batch"]})
        fig.update_xaxes(
            title_text="batch size", type="category", categoryorder="array",
            categoryarray=[str(b) for b in batches], row=1, col=col,
        )  # fmt: skip
        fig.update_yaxes(title_text="tokens/s", rangemode="tozero", row=1, col=col)
    fig.update_layout(
        title=title,
        legend={"orientation": "h", "y": -0.25},
        margin={"t": 80, "b": 10},
        height=440,
    )
    return fig
