"""Figures for the Dumps page: the module tree coloured by stitch verdict."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from studio_ui.theme import VERDICT_COLOURS


def module_treemap(tree: pd.DataFrame, title: str = "") -> go.Figure:
    """A treemap of module paths (parents implied by the dots), each box coloured by verdict."""
    ids, parents, labels, colours, hover = [], [], [], [], []
    seen: set[str] = set()
    for row in tree.itertuples(index=False):
        bits = row.module.split(".")
        for i in range(1, len(bits)):
            node = ".".join(bits[:i])
            if node not in seen and node not in set(tree.module):
                seen.add(node)
                ids.append(node)
                parents.append(".".join(bits[: i - 1]))
                labels.append(bits[i - 1])
                colours.append("#edebe9")
                hover.append(node)
        ids.append(row.module)
        parents.append(".".join(bits[:-1]))
        labels.append(bits[-1])
        colours.append(VERDICT_COLOURS.get(row.verdict, VERDICT_COLOURS["unknown"]))
        absmax = "" if pd.isna(row.absmax) else f"<br>max |x| {row.absmax:.4g}"
        hover.append(
            f"{row.module}<br>{row.module_class or 'class unknown'}<br>{row.verdict}{absmax}"
        )
    seen_all = set(ids)
    parents = [p if p in seen_all else "" for p in parents]
    fig = go.Figure(
        go.Treemap(
            ids=ids, parents=parents, labels=labels, marker={"colors": colours},
            hovertext=hover, hoverinfo="text", branchvalues="remainder",
        )
    )  # fmt: skip
    fig.update_layout(
        margin={"l": 4, "r": 4, "t": 30 if title else 4, "b": 4}, height=460, title=title
    )
    return fig


def verdict_style(report: pd.DataFrame):
    """The stitch report as a pandas Styler with each row's verdict cell coloured."""

    def colour(v: str) -> str:
        c = VERDICT_COLOURS.get(v, VERDICT_COLOURS["unknown"])
        return f"background-color: {c}; color: white"

    return report.style.map(colour, subset=["verdict"])
