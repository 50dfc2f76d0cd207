"""The Activations surface as a custom component: one plotly.js plot that stays in the page.

``st.plotly_chart`` gives every new figure a new element identity (its id hashes the figure),
so each toggle mounted a new plot: a new WebGL context and all geometry from scratch. This
component keeps one ``<div>`` per key and applies each new figure with ``Plotly.react`` (same
WebGL context; the camera the user chose survives through ``layout.uirevision``).

The component server serves only files inside the component's directory (symlinks out of it
are refused), so the two frontend files and plotly.js are copied once into a directory under
the user's cache, named by the hash of their content (a plotly upgrade gets a new one).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import plotly
import plotly.graph_objects as go
import streamlit.components.v1 as components

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


def surface_chart(fig: go.Figure, *, key: str, revision: str, config: dict | None = None) -> None:
    """Show ``fig`` (one scene) in the persistent plot of ``key`` (``fig``'s layout gets the
    revision).

    ``revision``: the camera the user set is kept until it changes (e.g. the tensor's label).
    """
    fig.update_layout(uirevision=revision, autosize=True)
    height = int(fig.layout.height or 650)
    _component(spec=fig.to_json(), height=height, config=config or {}, key=key, default=None)
