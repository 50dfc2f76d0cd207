"""The same token x channel x value surface as a PyVista mesh (for stpyvista and PNG export).

Axes are scaled into a box (channels 1.6, tokens 1.0, values 0.7, like the Plotly scene) because
raw units differ by orders of magnitude; the scalar bar shows the real values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from studio_backend.analysis.grid import Grid

# Off-screen rendering through EGL + Mesa (ENVIRONMENT.md); X is never available here.
os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def surface_mesh(grid: Grid, *, label: str = "value"):
    """A StructuredGrid over (channel, token) with the grid values as height and scalars."""
    import pyvista as pv

    z = grid.values.astype(np.float64)
    ny, nx = z.shape
    xs = np.linspace(0.0, 1.6, nx) if nx > 1 else np.zeros(1)
    ys = np.linspace(0.0, 1.0, ny) if ny > 1 else np.zeros(1)
    xx, yy = np.meshgrid(xs, ys)
    peak = float(np.abs(z).max()) or 1.0
    mesh = pv.StructuredGrid(xx, yy, z / peak * 0.7)
    # StructuredGrid points are in Fortran order of the (ny, nx) meshgrid arrays.
    mesh[label] = z.ravel(order="F")
    return mesh


def _cmap(absolute: bool):
    """The Plotly view's colours: viridis for |x|, blue - grey (zero) - red for signed values."""
    if absolute:
        return "viridis"
    from matplotlib.colors import LinearSegmentedColormap

    from studio_ui.figures.style import DIVERGING_GREY

    return LinearSegmentedColormap.from_list(
        "studio_diverging", [(p, c) for p, c in DIVERGING_GREY]
    )


def whole_label_count(lo: float, hi: float, preferred: tuple[int, ...]) -> int:
    """How many evenly spaced labels put every channel / token tick on a whole number.

    PyVista spaces an axis's labels evenly between its ends, so 0-63 with 5 labels reads 15.75,
    31.5, ...: a channel id that does not exist. The first preferred count whose gaps divide the
    span is used; a span no preferred count divides (a prime, say) gets its two ends only.
    """
    span = float(hi) - float(lo)
    if span <= 0 or not span.is_integer() or not float(lo).is_integer():
        return preferred[0] if span > 0 else 2
    for n in preferred:
        if int(span) % (n - 1) == 0:
            return n
    return 2


def plotter(
    grid: Grid,
    *,
    label: str = "value",
    title: str = "",
    absolute: bool = False,
    sorted_channels: bool = False,
    window_size: tuple[int, int] = (1000, 700),
    interactive: bool = False,
):
    """An off-screen Plotter with the surface (diverging colours for signed values).

    ``interactive`` (the page's vtk.js view) leaves out the bounding-box labels, which would
    show the box's scaled units; the real token and channel ranges are written as text.
    """
    import pyvista as pv

    p = pv.Plotter(off_screen=True, window_size=list(window_size))
    _draw(p, grid, label=label, title=title, absolute=absolute,
          sorted_channels=sorted_channels, interactive=interactive)  # fmt: skip
    return p


def _draw(p, grid: Grid, *, label: str, title: str, absolute: bool, sorted_channels: bool,
          interactive: bool) -> None:  # fmt: skip
    mesh = surface_mesh(grid, label=label)
    lim = float(np.abs(grid.values).max()) or 1.0
    p.add_mesh(
        mesh,
        scalars=label,
        cmap=_cmap(absolute),
        clim=(0.0, lim) if absolute else (-lim, lim),
        scalar_bar_args={
            "title": label,
            "vertical": True,
            "fmt": "%.3g",
            "position_x": 0.86,
            "position_y": 0.1,
        },
    )
    if title:
        p.add_text(title, font_size=10)
    t0, t1 = int(grid.token_axis[0]), int(grid.tokens.max())
    c_hi = int(grid.channels.max())
    p.add_text(
        f"long axis: channel 0-{c_hi}   short axis: token {t0}-{t1}",
        position="lower_left",
        font_size=8,
    )
    p.set_background("white")
    if interactive:
        p.camera_position = [(2.6, -1.8, 1.6), (0.8, 0.5, 0.0), (0.0, 0.0, 1.0)]
        p.reset_camera()
        return
    # The mesh lives in a scaled box; axes_ranges labels its ticks with the real channel, token
    # and value ranges (height is linear in the value, so the ticks are exact).
    z = grid.values
    p.show_bounds(
        xtitle="channel rank" if sorted_channels else "channel",
        ytitle="token",
        ztitle=label,
        axes_ranges=[
            float(grid.channel_axis[0]), float(grid.channel_axis[-1]),
            float(grid.token_axis[0]), float(grid.token_axis[-1]),
            float(z.min()), float(z.max()),
        ],
        n_xlabels=whole_label_count(grid.channel_axis[0], grid.channel_axis[-1], (5, 4, 6, 3, 7)),
        n_ylabels=whole_label_count(grid.token_axis[0], grid.token_axis[-1], (4, 5, 3, 6, 7)),
        n_zlabels=4, fmt="%.4g", font_size=10, color="black",
    )  # fmt: skip
    p.camera_position = [(2.6, -1.8, 1.6), (0.8, 0.5, 0.0), (0.0, 0.0, 1.0)]
    p.reset_camera()  # keep the viewing direction, fit the whole surface and its labels


class PngWriter:
    """Writes surfaces to PNG through ONE off-screen render window, reused from image to image.

    Opening a window (EGL context, shaders) and closing it cost more than drawing a small
    surface, so a ``studio render`` worker keeps one. Each image starts from an empty scene:
    ``clear()`` drops every actor and scalar bar and also the lights, which are put back as a
    fresh plotter has them (the light kit); without that the image came out brighter.
    ``tests/analysis/test_figures.py`` checks a reused writer's images are pixel-identical to a
    fresh one's. No multisampling: on Mesa llvmpipe 8x MSAA doubled the drawing time (edges
    are stair-stepped instead of smoothed; ticks, titles and colour bar are the same text).
    PNGs are written with zlib level 1 (files about a quarter larger, about half the encoding
    time of level 6).
    """

    def __init__(self, window_size: tuple[int, int] = (1000, 700)) -> None:
        import pyvista as pv

        self._p = pv.Plotter(off_screen=True, window_size=list(window_size))
        self._p.render_window.SetMultiSamples(0)
        self._used = False

    def write(
        self,
        grid: Grid,
        path: Path | None,
        *,
        label: str = "value",
        title: str = "",
        absolute: bool = False,
        sorted_channels: bool = False,
    ) -> np.ndarray:
        """Draw ``grid`` (``plotter``'s options) and save it to ``path``; returns the RGB image."""
        p = self._p
        if self._used:
            p.clear()
            p.enable_lightkit()
            # As for a new plotter: adding actors does not render, the screenshot renders once.
            p._first_time = True
        self._used = True
        _draw(p, grid, label=label, title=title, absolute=absolute,
              sorted_channels=sorted_channels, interactive=False)  # fmt: skip
        img = p.screenshot(None, return_img=True)
        if path is not None:
            from PIL import Image

            Image.fromarray(img).save(path, format="PNG", compress_level=1)
        return img

    def close(self) -> None:
        self._p.close()


def screenshot(grid: Grid, path: Path | None, **kwargs) -> Path | None:
    """Render the surface to a PNG without a browser or display (``path`` None: only render)."""
    w = PngWriter(kwargs.pop("window_size", (1000, 700)))
    try:
        w.write(grid, path, **kwargs)
    finally:
        w.close()
    return path
