"""The token x channel x value surface as plain VTK actors: one scene for the PNG export
(``PngWriter``, ``studio render``) and the page's PyVista view (``pyvista_surface.plotter``).

Plain VTK on purpose, no PyVista and no matplotlib: a ``studio render`` worker imports this in
about 0.2 s instead of 0.7 s and draws each image without the wrapper's per-call overhead
(docs/PERFORMANCE.md "`studio render`"). Axes are scaled into a box (channels 1.6, tokens 1.0,
values 0.7, like the Plotly scene) because raw units differ by orders of magnitude; the axis
ticks and the colour bar show the real channel, token and value numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# Off-screen rendering through EGL + Mesa (ENVIRONMENT.md); X is never available here.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import vtkmodules.vtkRenderingFreeType  # noqa: E402,F401  (text rendering)
import vtkmodules.vtkRenderingOpenGL2  # noqa: E402,F401  (the OpenGL implementations)
from vtkmodules.util.numpy_support import numpy_to_vtk, vtk_to_numpy  # noqa: E402
from vtkmodules.vtkCommonCore import vtkLookupTable, vtkPoints, vtkStringArray  # noqa: E402
from vtkmodules.vtkCommonDataModel import vtkStructuredGrid  # noqa: E402
from vtkmodules.vtkRenderingAnnotation import vtkCubeAxesActor, vtkScalarBarActor  # noqa: E402
from vtkmodules.vtkRenderingCore import (  # noqa: E402
    vtkActor,
    vtkDataSetMapper,
    vtkLightKit,
    vtkRenderer,
    vtkRenderWindow,
    vtkTextActor,
    vtkWindowToImageFilter,
)

from studio_backend.analysis.grid import Grid  # noqa: E402
from studio_ui.figures.style import DIVERGING_GREY, VIRIDIS  # noqa: E402

BOX = (1.6, 1.0, 0.7)  # channel, token, |value| extents of the drawn box
CAMERA = ((2.6, -1.8, 1.6), (0.8, 0.5, 0.0), (0.0, 0.0, 1.0))  # position, focal point, view up
BLACK = (0.0, 0.0, 0.0)


def finite_range(z: np.ndarray) -> tuple[float, float, float]:
    """Smallest and largest finite value and the largest finite |value| (1.0 when none or 0):
    a NaN or inf in a dump (an fp16 overflow) must not blank the figure or its axes."""
    f = np.asarray(z, dtype=np.float64)
    f = f[np.isfinite(f)]
    if not f.size:
        return 0.0, 0.0, 1.0
    lo, hi = float(f.min()), float(f.max())
    return lo, hi, max(abs(lo), abs(hi)) or 1.0


def surface_grid(grid: Grid, *, label: str = "value") -> vtkStructuredGrid:
    """A structured grid over (channel, token) with the grid values as height and scalars
    (point ``c + n_channels * t`` is channel position ``c`` of token row ``t``). Heights are
    scaled by the largest finite |value|; +-inf stand at the box's top / bottom and NaN at
    zero height (its colour is the lookup table's NaN colour)."""
    z = np.asarray(grid.values, dtype=np.float64)
    ny, nx = z.shape
    xs = np.linspace(0.0, BOX[0], nx) if nx > 1 else np.zeros(1)
    ys = np.linspace(0.0, BOX[1], ny) if ny > 1 else np.zeros(1)
    peak = finite_range(z)[2]
    pts = np.empty((ny, nx, 3), dtype=np.float64)
    pts[..., 0] = xs[None, :]
    pts[..., 1] = ys[:, None]
    pts[..., 2] = np.clip(np.nan_to_num(z / peak, nan=0.0), -1.0, 1.0) * BOX[2]
    points = vtkPoints()
    points.SetData(numpy_to_vtk(pts.reshape(-1, 3), deep=True))
    sg = vtkStructuredGrid()
    sg.SetDimensions(nx, ny, 1)
    sg.SetPoints(points)
    scalars = numpy_to_vtk(z.ravel(), deep=True)
    scalars.SetName(label)
    sg.GetPointData().SetScalars(scalars)
    return sg


def points_of(sg: vtkStructuredGrid) -> np.ndarray:
    """The grid's points as an ``(n, 3)`` array (tests, checks)."""
    return vtk_to_numpy(sg.GetPoints().GetData())


def lookup_table(absolute: bool, lim: float) -> vtkLookupTable:
    """The Plotly view's colours, 256 steps: viridis over [0, lim] for |x|, blue - grey (zero) -
    red over [-lim, lim] for signed values."""
    stops = VIRIDIS if absolute else DIVERGING_GREY
    at = np.array([float(p) for p, _ in stops])
    rgb = np.array([[int(c[i : i + 2], 16) / 255.0 for i in (1, 3, 5)] for _, c in stops])
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, at, rgb[:, k]) for k in range(3)] + [np.ones(256)], axis=1)
    lut = vtkLookupTable()
    lut.SetNumberOfTableValues(256)
    lut.SetTable(numpy_to_vtk(np.round(table * 255).astype(np.uint8), deep=True))
    lut.SetTableRange((0.0, lim) if absolute else (-lim, lim))
    lut.SetNanColor(*NAN_COLOUR, 1.0)
    return lut


NAN_COLOUR = (1.0, 0.0, 1.0)  # magenta: on neither colour scale


def _non_finite(z: np.ndarray) -> str:
    """The note's second line for NaN / inf cells (empty when every value is finite)."""
    nan, inf = int(np.isnan(z).sum()), int(np.isinf(z).sum())
    words = ([f"{nan} NaN (magenta)"] if nan else []) + (
        [f"{inf} inf (at the ends)"] if inf else []
    )
    return ("\n" + ", ".join(words)) if words else ""


def _text(text: str, size: int, x: float, y: float, *, top: bool) -> vtkTextActor:
    """Screen text at (x, y) in viewport fractions, anchored by its top or bottom left."""
    t = vtkTextActor()
    t.SetInput(text)
    prop = t.GetTextProperty()
    prop.SetFontSize(size)
    prop.SetColor(BLACK)
    prop.SetVerticalJustificationToTop() if top else prop.SetVerticalJustificationToBottom()
    t.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
    t.GetPositionCoordinate().SetValue(x, y)
    return t


def _scalar_bar() -> vtkScalarBarActor:
    bar = vtkScalarBarActor()
    bar.SetOrientationToVertical()
    bar.SetPosition(0.86, 0.1)
    bar.SetWidth(0.1)
    bar.SetHeight(0.6)
    bar.SetMaximumNumberOfColors(256)
    bar.SetLabelFormat("%.4g")
    bar.UnconstrainedFontSizeOn()
    for prop, size in ((bar.GetTitleTextProperty(), 18), (bar.GetLabelTextProperty(), 15)):
        prop.SetColor(BLACK)
        prop.SetFontSize(size)
        prop.BoldOff()
        prop.ItalicOff()
        prop.ShadowOff()
    return bar


def _fill_bar(bar: vtkScalarBarActor, lut: vtkLookupTable, label: str) -> None:
    """Colours, title and labels: round values inside the range (VTK's evenly spaced ones when
    fewer than two round values fit)."""
    bar.SetLookupTable(lut)
    bar.SetTitle(label)
    lo, hi = lut.GetTableRange()
    ticks = nice_ticks(lo, hi, 5, whole=False)
    ticks = ticks[(ticks >= lo - 1e-9 * (hi - lo)) & (ticks <= hi + 1e-9 * (hi - lo))]
    bar.SetUseCustomLabels(len(ticks) >= 2)
    bar.SetNumberOfLabels(5)
    if len(ticks) >= 2:
        bar.SetCustomLabels(numpy_to_vtk(ticks, deep=True))


def nice_ticks(lo: float, hi: float, most: int, *, whole: bool) -> np.ndarray:
    """Evenly spaced ticks at round numbers (1, 2 or 5 x 10^k apart; whole numbers for channel
    and token axes) from at or below ``lo`` to at or above ``hi``: of the steps giving 3 to
    ``most`` + 2 ticks, the one whose ticks overshoot the data least (then the count nearest
    ``most``, then the fewer ticks).

    The box axes put their labels evenly between the box's ends, so the box is stretched from the
    first tick to the last (the surface stays where its data is): every label then sits exactly
    at its value. An axis of span 0 gets its one value at both ends.
    """
    span = float(hi) - float(lo)
    if span <= 0:
        return np.array([float(lo), float(lo)])
    best: tuple[float, int, float, np.ndarray] | None = None
    top = int(np.floor(np.log10(span)))
    for k in range(top - 2, top + 1):
        for m in (1.0, 2.0, 5.0):
            step = m * 10.0**k
            if whole and step < 1:
                continue
            first = np.floor(lo / step + 1e-9) * step
            last = np.ceil(hi / step - 1e-9) * step
            n = int(round((last - first) / step)) + 1
            if not 3 <= n <= most + 2 and not (whole and step == 1 and n < 3):
                continue
            key = (round((last - first - span) / span, 6), abs(n - most), -step)
            if best is None or key < best[:3]:
                best = (*key, first + step * np.arange(n))
    return best[3] if best is not None else np.array([float(lo), float(hi)])


def _scene(v: np.ndarray | float, lo: float, hi: float, size: float) -> np.ndarray | float:
    """Data value ``v`` on an axis whose data runs from ``lo`` to ``hi`` over [0, size]."""
    return (v - lo) / (hi - lo) * size if hi > lo else v * 0.0


def _labels(ticks: np.ndarray, fmt: str) -> vtkStringArray:
    arr = vtkStringArray()
    for v in ticks:
        arr.InsertNextValue(fmt % (0.0 if v == 0 else v))  # no "-0"
    return arr


def _cube_axes(ren: vtkRenderer) -> vtkCubeAxesActor:
    ax = vtkCubeAxesActor()
    ax.SetCamera(ren.GetActiveCamera())
    ax.SetYTitle("token")
    ax.SetLabelScaling(False, 0, 0, 0)
    ax.SetFlyModeToOuterEdges()
    ax.SetTickLocationToOutside()
    ax.SetScreenSize(12.0)
    ax.SetLabelOffset(12.0)
    ax.SetTitleOffset((16.0, 16.0))
    for i in range(3):
        ax.GetTitleTextProperty(i).SetColor(BLACK)
        ax.GetLabelTextProperty(i).SetColor(BLACK)
    for prop in (ax.GetXAxesLinesProperty(), ax.GetYAxesLinesProperty(),
                 ax.GetZAxesLinesProperty()):  # fmt: skip
        prop.SetColor(BLACK)
    return ax


def _fill_axes(ax: vtkCubeAxesActor, grid: Grid, label: str, sorted_channels: bool) -> None:
    """Label the box with the real channel, token and value numbers at round values (the mesh
    lives in the scaled box; height is linear in the value, so the ticks are exact)."""
    c0, c1 = float(grid.channel_axis[0]), float(grid.channel_axis[-1])
    t0, t1 = float(grid.token_axis[0]), float(grid.token_axis[-1])
    z_lo, z_hi, peak = finite_range(grid.values)
    ct = nice_ticks(c0, c1, 6, whole=True)
    tt = nice_ticks(t0, t1, 4, whole=True)
    zt = nice_ticks(z_lo, z_hi, 5, whole=False)
    ax.SetBounds(
        _scene(ct[0], c0, c1, BOX[0]), _scene(ct[-1], c0, c1, BOX[0]),
        _scene(tt[0], t0, t1, BOX[1]), _scene(tt[-1], t0, t1, BOX[1]),
        zt[0] / peak * BOX[2], zt[-1] / peak * BOX[2],
    )  # fmt: skip
    ax.SetXTitle("channel rank" if sorted_channels else "channel")
    ax.SetZTitle(label)
    for i, (ticks, fmt) in enumerate(((ct, "%.0f"), (tt, "%.0f"), (zt, "%.4g"))):
        getattr(ax, f"Set{'XYZ'[i]}AxisRange")(float(ticks[0]), float(ticks[-1]))
        labels = _labels(ticks, fmt)
        if i == 0:  # the channel axis ends where the token axis starts: one label, not two
            labels.SetValue(labels.GetNumberOfValues() - 1, "")
        ax.SetAxisLabels(i, labels)


class Scene:
    """The surface, its colour bar, title, axis note and (``axes``) labelled box axes in one
    renderer: built once, refilled by ``show`` for each grid (a ``studio render`` worker draws
    all its images with one scene: creating and destroying the actors cost a third of an image).
    ``axes`` False (the page's vtk.js view) writes the real token and channel ranges as text
    only."""

    def __init__(self, ren: vtkRenderer, *, axes: bool = True) -> None:
        self.ren = ren
        self._mapper = vtkDataSetMapper()
        self._mapper.SetScalarModeToUsePointData()
        self._mapper.InterpolateScalarsBeforeMappingOn()
        self._surface = vtkActor()
        self._surface.SetMapper(self._mapper)
        self._bar = _scalar_bar()
        self._title = _text("", 18, 0.01, 0.99, top=True)
        self._note = _text("", 14, 0.01, 0.01, top=False)
        self._axes = _cube_axes(ren) if axes else None
        for prop in (self._surface, self._bar, self._title, self._note, self._axes):
            if prop is not None:
                ren.AddViewProp(prop)
        ren.SetBackground(1.0, 1.0, 1.0)

    def note(self) -> str:
        """The range note as drawn (channel, token and value ranges; NaN / inf counts)."""
        return self._note.GetInput()

    def show(self, grid: Grid, *, label: str = "value", title: str = "",
             absolute: bool = False, sorted_channels: bool = False) -> None:  # fmt: skip
        """Fill every actor from ``grid`` and aim the camera."""
        z = np.asarray(grid.values)
        z_lo, z_hi, lim = finite_range(z)
        lut = lookup_table(absolute, lim)
        self._mapper.SetInputData(surface_grid(grid, label=label))
        self._mapper.SetLookupTable(lut)
        self._mapper.SetScalarRange(lut.GetTableRange())
        _fill_bar(self._bar, lut, label)
        self._title.SetInput(title)
        c_hi, t0, t1 = int(grid.channels.max()), int(grid.token_axis[0]), int(grid.tokens.max())
        self._note.SetInput(f"long axis: channel 0-{c_hi}   short axis: token {t0}-{t1}   "
                            f"{label} {z_lo:.4g} to {z_hi:.4g}{_non_finite(z)}")  # fmt: skip
        if self._axes is not None:
            _fill_axes(self._axes, grid, label, sorted_channels)
        cam = self.ren.GetActiveCamera()
        cam.SetPosition(CAMERA[0])
        cam.SetFocalPoint(CAMERA[1])
        cam.SetViewUp(CAMERA[2])
        self.ren.ResetCamera()  # keep the viewing direction, fit the surface and its labels


class PngWriter:
    """Writes surfaces to PNG through ONE off-screen render window, reused from image to image.

    Opening a window (EGL context, shaders) costs more than drawing a small surface, so a
    ``studio render`` worker keeps one, and one ``Scene`` refilled for each image;
    ``tests/analysis/test_figures.py`` checks a reused writer's images are pixel-identical to a
    fresh one's. No multisampling: on Mesa llvmpipe it
    doubled the drawing time. PNGs are written with zlib level 1 (files about a quarter larger,
    about half the encoding time of level 6).
    """

    def __init__(self, window_size: tuple[int, int] = (1000, 700)) -> None:
        self._win = vtkRenderWindow()
        self._win.SetOffScreenRendering(1)
        self._win.SetMultiSamples(0)
        self._win.SetSize(*window_size)
        self._ren = vtkRenderer()
        vtkLightKit().AddLightsToRenderer(self._ren)
        self._win.AddRenderer(self._ren)
        self._grab = vtkWindowToImageFilter()
        self._grab.SetInput(self._win)
        self._grab.ReadFrontBufferOff()
        self._grab.ShouldRerenderOff()  # read what write() rendered (the filter re-rendered)
        self._scene = Scene(self._ren)

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
        """Draw ``grid`` and save it to ``path`` (None: only draw); returns the RGB image."""
        self._scene.show(grid, label=label, title=title, absolute=absolute,
                         sorted_channels=sorted_channels)  # fmt: skip
        self._win.Render()
        self._grab.Modified()
        self._grab.Update()
        img = self._grab.GetOutput()
        w, h, _ = img.GetDimensions()
        rgb = vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)[::-1, :, :3]
        rgb = np.ascontiguousarray(rgb)
        if path is not None:
            from PIL import Image

            Image.fromarray(rgb).save(path, format="PNG", compress_level=1)
        return rgb

    def scene_note(self) -> str:
        """The range note of the last image (tests)."""
        return self._scene.note()

    def close(self) -> None:
        self._win.Finalize()


def _draw_once(grid: Grid, path: Path | None, kwargs: dict) -> np.ndarray:
    w = PngWriter(kwargs.pop("window_size", (1000, 700)))
    try:
        return w.write(grid, path, **kwargs)
    finally:
        w.close()


def screenshot_array(grid: Grid, **kwargs) -> np.ndarray:
    """The surface as an RGB array, drawn in a window of its own."""
    return _draw_once(grid, None, kwargs)


def screenshot(grid: Grid, path: Path | None, **kwargs) -> Path | None:
    """Render the surface to a PNG without a browser or display (``path`` None: only render)."""
    _draw_once(grid, path, kwargs)
    return path
