"""The Activations surface as a custom component: one plotly.js plot that stays in the page.

``st.plotly_chart`` gives every new figure a new element identity (its id hashes the figure),
so each toggle mounted a new plot: a new WebGL context and all geometry from scratch. This
component keeps one ``<div>`` per key and applies each new figure with ``Plotly.react`` (same
WebGL context; the camera the user chose survives through ``layout.uirevision``).

The component server serves only files inside the component's directory (symlinks out of it
are refused), so the two frontend files and plotly.js are copied once into a directory under
the user's cache, named by the hash of their content (a plotly upgrade gets a new one).

The view toggles (|x|, log, sort channels) run in the browser: the component gets the pooled
grid once (raw block extremes, their exact tokens and channels) and applies the transform
itself (``surface.js``), then reports the new state with ``setComponentValue`` so the server
follows (sidebar toggles, deep link, exports). The transforms are the server's own
(``lod.transform``, ``studio_ui.services_activations.sort_columns``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import plotly
import streamlit.components.v1 as components

from studio_backend.analysis.lod import Grid
from studio_ui.figures import activations as figs
from studio_ui.figures.style import DIVERGING_GREY, value_label

FRONTEND = Path(__file__).parent / "frontend"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def served_dir(cache: Path | None = None) -> Path:
    """index.html, surface.js and plotly.min.js together in one directory (made once)."""
    files = {p.name: p for p in FRONTEND.iterdir() if p.is_file()} | {"plotly.min.js": PLOTLY_JS}
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name].read_bytes())
    base = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = base / "inference-studio" / "components"
    out = base / f"surface-{h.hexdigest()[:16]}"
    if not (out / "index.html").is_file():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=base, prefix=".surface-"))
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
        try:
            tmp.rename(out)  # atomic: a server starting beside us sees all files or none
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


_component = components.declare_component("studio_surface", path=str(served_dir()))


# Height of the component's own toggle bar above the plot (px).
BAR = 34
STATES = [(a, lg, so) for a in (False, True) for lg in (False, True) for so in (False, True)]


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def _state_key(absolute: bool, log: bool, sort: bool) -> str:
    return f"{int(absolute)}{int(log)}{int(sort)}"


def payload(grid: Grid, *, title: str, texts, revision: str, height: int) -> str:
    """Everything the browser needs to draw every toggle state of ``grid`` (unsorted, raw).

    The figure skeleton (layout, lighting, colour bar) comes from ``surface_figure``; the
    arrays travel once as little-endian base64; hover templates, axis titles and colour scales
    of the 8 states are made here, so the labels stay the server's.
    """
    rows, cols = grid.raw.shape
    fig = figs.surface_figure(grid, title=title, token_text=texts, height=height)
    fig.update_traces(z=None, x=None, y=None, customdata=None, text=None, hovertemplate=None)
    fig.update_layout(uirevision=revision, autosize=True)
    views = {}
    for a, lg, so in STATES:
        views[_state_key(a, lg, so)] = {
            "template": _template(texts is not None, a, lg, so),
            "label": value_label(a, lg),
            "xtitle": "channel rank" if so else "channel",
        }
    bc = max(1, math.ceil(grid.source_shape[1] / cols))
    data = {
        "rows": rows,
        "cols": cols,
        "raw": _b64(grid.raw, "<f4"),
        "tokens": _b64(grid.tokens, "<i4"),
        "channels": _b64(grid.channels, "<i4"),
        "x": np.asarray(grid.channel_axis).tolist(),
        "xRank": (np.arange(cols) * bc).tolist(),
        "y": np.asarray(grid.token_axis).tolist(),
        "texts": None if texts is None else [repr(t) for t in texts],
    }
    return json.dumps(
        {
            "fig": json.loads(fig.to_json()),
            "data": data,
            "views": views,
            "colorscales": {"diverging": DIVERGING_GREY, "sequential": figs.SEQUENTIAL},
        }
    )


def _template(has_text: bool, absolute: bool, log: bool, sort: bool) -> str:
    """The hover template of ``figs._hover`` for customdata ``[token, channel, raw]``."""
    transformed = absolute or log
    text = " %{text}" if has_text else ""
    rank = " (rank %{x})" if sort else ""
    shown = f"<br>{value_label(absolute, log)} %{{z:.4g}}" if transformed else ""
    return (
        f"token %{{customdata[0]}}{text}<br>channel %{{customdata[1]}}{rank}"
        f"<br>value %{{customdata[2]:.4g}}{shown}<extra></extra>"
    )


_specs: dict[tuple, tuple[Grid, str]] = {}


def _spec(grid: Grid, **kw) -> str:
    """``payload`` once per grid (grids are cached objects): a rerun re-sends the same string."""
    texts = kw.get("texts")
    key = (id(grid), hash(tuple(texts)) if texts is not None else None, kw["title"],
           kw["revision"], kw["height"])  # fmt: skip
    hit = _specs.get(key)
    if hit is not None and hit[0] is grid:
        return hit[1]
    spec = payload(grid, **kw)
    while len(_specs) >= 4:
        _specs.pop(next(iter(_specs)))
    _specs[key] = (grid, spec)
    return spec


def surface_chart(
    grid: Grid, *, title: str, texts, state: dict, seq: int, key: str, on_change=None,
    height: int = 650, config: dict | None = None,
) -> None:  # fmt: skip
    """The surface of ``grid`` (pooled, unsorted, untransformed) shown in ``state``
    (``{"abs", "log", "sort"}``) in the persistent plot of ``key``, with its own toggles.

    A toggle in the component redraws in the browser and sets the component's value to
    ``{"abs", "log", "sort", "seq"}`` (``on_change`` runs before the rerun); ``seq`` is the
    last such value the server has taken over, so the browser ignores a rerun older than its
    own latest click. The camera is kept until ``title`` changes.
    """
    spec = _spec(grid, title=title, texts=texts, revision=title, height=height)
    _component(
        spec=spec, state={k: bool(state.get(k)) for k in ("abs", "log", "sort")}, seq=int(seq),
        height=height + BAR, config=config or {}, key=key, default=None, on_change=on_change,
    )  # fmt: skip
