"""Figure builders carry exactly the analysed data (values, exact hover positions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from studio_backend.analysis.lod import build_grid
from studio_ui.figures import activations as figs


def _data() -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 500)).astype(np.float32)
    a[:, 77] *= 40.0
    a[123, 77] = -900.0
    return a


def test_surface_holds_grid_and_exact_hover() -> None:
    g = build_grid(_data(), max_tokens=50, max_channels=100)
    fig = figs.surface_figure(g, title="layer 0", token_text=[f"t{i}" for i in range(300)])
    tr = fig.data[0]
    np.testing.assert_array_equal(np.asarray(tr.z), g.values)
    i, j = np.unravel_index(np.argmin(g.values), g.values.shape)
    # plotly.js reads surface customdata / text as [column][row]: the transpose of z.
    assert tuple(np.asarray(tr.customdata)[j, i]) == (123.0, 77.0)
    assert "value %{z:.4g}" in tr.hovertemplate
    gl = build_grid(_data(), max_tokens=50, max_channels=100, log=True)
    tl = figs.surface_trace(gl, log=True)
    assert tuple(np.asarray(tl.customdata)[j, i]) == (123.0, 77.0, -900.0)
    assert "value %{customdata[2]:.4g}<br>sign * log10(1+|value|) %{z:.4g}" in tl.hovertemplate
    assert np.asarray(tr.text)[j, i] == "'t123'"
    assert "shown as 50 x 100 (max-|x| pooled)" in fig.layout.title.text
    assert fig.layout.scene.zaxis.title.text == "value"
    assert fig.layout.scene.camera.eye.z < 0.6  # low enough to see walls below the surface


@pytest.mark.parametrize(("absolute", "log", "label"), [
    (False, False, "value"), (True, False, "|value|"), (True, True, "log10(1+|value|)"),
])  # fmt: skip
def test_sorted_surface_hover_is_numpy_argsort(absolute: bool, log: bool, label: str) -> None:
    """Unpooled, sorted: cell [t, r] holds token t, channel argsort(-absmax)[r], x[t, that]."""
    a = _data()[:40, :64]
    g = build_grid(a, sort_channels=True, absolute=absolute, log=log)
    fig = figs.surface_figure(g, absolute=absolute, log=log, sorted_channels=True)
    tr = fig.data[0]
    order = np.argsort(-np.abs(a).max(axis=0), kind="stable")
    custom = np.asarray(tr.customdata)  # [rank, token, (token, channel, value)]
    assert custom.shape == (64, 40, 3 if absolute or log else 2)
    np.testing.assert_array_equal(custom[:, :, 0], np.tile(np.arange(40), (64, 1)))
    np.testing.assert_array_equal(custom[:, :, 1], np.tile(order[:, None], (1, 40)))
    value = custom[:, :, 2] if absolute or log else np.asarray(tr.z).T  # hover's value field
    np.testing.assert_array_equal(value, a[:, order].T)
    np.testing.assert_array_equal(np.asarray(tr.x), np.arange(64))  # x = rank
    assert "channel %{customdata[1]} (rank %{x})" in tr.hovertemplate
    assert fig.layout.scene.zaxis.title.text == label
    assert fig.layout.scene.xaxis.title.text == "channel rank"


def test_compare_profile_kurtosis_persistence() -> None:
    a = _data()
    ga, gb = build_grid(a, max_tokens=30), build_grid(a * 0.5, max_tokens=30)
    gd = build_grid(a - a * 0.5, max_tokens=30)
    fig = figs.compare_figure(ga, gb, gd, labels=("bf16", "w8a8"))
    assert [t.scene for t in fig.data] == ["scene", "scene2", "scene3"]
    assert fig.data[0].cmax == fig.data[1].cmax == pytest.approx(900.0)
    assert fig.layout.scene.camera == fig.layout.scene2.camera
    # Colour bars sit in the gaps after B and after the difference, never over a plot: each
    # bar's left edge and the ~0.07 of width its ticks and title take lie outside every scene.
    domains = [tuple(fig.layout[s].domain.x) for s in ("scene", "scene2", "scene3")]
    assert domains == [(0.0, 0.28), (0.285, 0.565), (0.675, 0.915)]
    bars = [(t.colorbar.x, t.colorbar.xanchor, t.colorbar.title.text) for t in fig.data
            if t.showscale]  # fmt: skip
    assert bars == [(0.57, "left", "bf16, w8a8: value"), (0.92, "left", "w8a8 - bf16")]
    for x, _, _ in bars:  # ~90 px of a 1000 px wide figure: bar, tick labels, title
        assert not any(lo < x + dx < hi for lo, hi in domains for dx in (0.0, 0.045, 0.09))
    titles = [(a.text, round(a.x, 6)) for a in fig.layout.annotations]
    assert titles == [("bf16", 0.14), ("w8a8", 0.425), ("w8a8 - bf16", 0.795)]
    html = figs.figure_html(fig, sync_cameras=True)
    assert "plotly_relayout" in html and '<script src="http' not in html
    prof = figs.profile_figure(np.abs(a).max(axis=0), top=3)
    assert list(prof.data[1].x)[0] == 77
    rows = pd.DataFrame(
        {
            "layer": [1, 0, 0, 1],
            "kind": ["o_proj", "o_proj", "qkv", "qkv"],
            "kurtosis": [5, 3, 4, 9],
        }
    )
    k = figs.kurtosis_figure(rows)
    assert [(t.name, list(t.x), list(t.y)) for t in k.data] == [
        ("o_proj", [0, 1], [3, 5]),
        ("qkv", [0, 1], [4, 9]),
    ]
    assert k.layout.yaxis.type == "log"
    assert list(k.layout.yaxis.ticktext) == ["3", "4", "5", "6", "8"]
    m = pd.DataFrame([[1.0, 2.0], [3.0, 4.0]], index=[0, 1], columns=[77, 5])
    h = figs.persistence_figure(m)
    assert list(h.data[0].x) == ["77", "5"]
    assert (h.layout.yaxis.tickmode, h.layout.yaxis.tick0, h.layout.yaxis.dtick) == ("linear", 0, 1)
    assert (k.layout.xaxis.tickmode, k.layout.xaxis.tick0, k.layout.xaxis.dtick) == ("linear", 0, 1)


def test_vtk_surface_grid_and_png(tmp_path) -> None:
    from studio_ui.figures import vtk_scene

    g = build_grid(_data(), max_tokens=40, max_channels=60)
    sg = vtk_scene.surface_grid(g)
    ny, nx = g.values.shape
    dims = [0, 0, 0]
    sg.GetDimensions(dims)
    assert dims == [nx, ny, 1]
    pts = vtk_scene.points_of(sg)
    scalars = vtk_scene.vtk_to_numpy(sg.GetPointData().GetScalars())
    # point c + nx * t: channel position c of token row t; height = value / peak * 0.7
    np.testing.assert_array_equal(scalars, g.values.astype(np.float64).ravel())
    assert float(scalars.min()) == -900.0
    np.testing.assert_allclose(pts[:, 2], g.values.ravel() / 900.0 * 0.7, rtol=1e-6)
    np.testing.assert_allclose(pts[:nx, 0], np.linspace(0, 1.6, nx))
    np.testing.assert_allclose(pts[::nx, 1], np.linspace(0, 1.0, ny))
    png = vtk_scene.screenshot(g, tmp_path / "s.png", title="test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reused_png_writer_is_pixel_identical_to_a_fresh_one(tmp_path) -> None:
    """A ``studio render`` worker draws every image in one window and one scene: each image must
    equal what a new window draws (no camera, bounds, labels or colour bar left over)."""
    from PIL import Image

    from studio_ui.figures import vtk_scene

    rng = np.random.default_rng(3)
    a = build_grid(_data(), max_tokens=40, max_channels=60)
    b = build_grid(rng.normal(size=(7, 300)).astype(np.float32) * 50, max_tokens=40,
                   max_channels=60, absolute=True)  # fmt: skip
    w = vtk_scene.PngWriter()
    try:
        seq = [w.write(a, None, title="a"), w.write(b, None, title="b", absolute=True),
               w.write(a, tmp_path / "a.png", title="a")]  # fmt: skip
    finally:
        w.close()
    fresh_a = vtk_scene.PngWriter().write(a, None, title="a")
    fresh_b = vtk_scene.PngWriter().write(b, None, title="b", absolute=True)
    assert np.array_equal(seq[0], fresh_a)
    assert np.array_equal(seq[1], fresh_b)
    assert np.array_equal(seq[2], fresh_a)
    assert not np.array_equal(fresh_a, fresh_b)
    # the file holds the same pixels (lossless PNG)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png").convert("RGB")), fresh_a)


@pytest.mark.parametrize(
    "values",
    [
        np.ones((1, 1)),
        np.arange(10.0)[None],
        np.arange(10.0)[:, None],
        np.zeros((5, 5)),
        np.full((4, 4), np.nan),
    ],
    ids=["1x1", "one token", "one channel", "zeros", "all NaN"],
)
def test_png_of_degenerate_grids(values: np.ndarray) -> None:
    """One token, one channel, all zeros or all NaN still draw (no exception, a white page
    with the colour bar's and note's pixels on it)."""
    from studio_ui.figures import vtk_scene

    g = build_grid(values.astype(np.float32), max_tokens=400, max_channels=800)
    img = vtk_scene.screenshot_array(g, title="edge")
    assert img.shape == (700, 1000, 3)
    assert (img < 128).any() and (img == 255).all(axis=2).mean() > 0.5


def test_png_shows_nan_and_inf_without_losing_the_scale() -> None:
    """An fp16 overflow leaves inf / NaN in a dump: the colours, heights and ticks come from the
    finite values; +-inf stand at the box's top / bottom, NaN at zero height in magenta, and the
    note counts them."""
    from studio_ui.figures import vtk_scene

    a = np.zeros((4, 5), np.float32)
    a[0, 0], a[1, 1], a[2, 2], a[3, 3] = 2.0, -4.0, np.inf, np.nan
    a[3, 4] = -np.inf
    g = build_grid(a, max_tokens=400, max_channels=800)
    assert vtk_scene.finite_range(g.values) == (-4.0, 2.0, 4.0)
    h = vtk_scene.points_of(vtk_scene.surface_grid(g))[:, 2].reshape(4, 5)
    np.testing.assert_allclose(
        [h[0, 0], h[1, 1], h[2, 2], h[3, 3], h[3, 4]], [0.35, -0.7, 0.7, 0.0, -0.7], atol=1e-6
    )
    lut = vtk_scene.lookup_table(False, 4.0)
    assert lut.GetNanColor()[:3] == vtk_scene.NAN_COLOUR
    win = vtk_scene.PngWriter()
    win.write(g, None, title="overflow")
    note = win.scene_note()
    assert note.startswith("long axis: channel 0-4   short axis: token 0-3   value -4 to 2\n")
    assert note.endswith("1 NaN (magenta), 2 inf (at the ends)")
    img = win.write(g, None, title="overflow")

    def magenta(im: np.ndarray) -> np.ndarray:  # lit, so not exactly 255, 0, 255
        r, gr, b = (im[..., i].astype(int) for i in range(3))
        return (r > 100) & (b > 100) & (gr < r // 3) & (abs(r - b) < 40)

    assert magenta(img).sum() > 20  # the NaN cell is drawn in magenta, on neither colour scale
    finite = build_grid(np.nan_to_num(a, nan=0.0), max_tokens=400, max_channels=800)
    assert not magenta(vtk_scene.screenshot_array(finite)).any()


def test_png_colours_are_the_plotly_scales() -> None:
    """The PNG's lookup table is the Plotly view's scale: grey at zero, the end colours at the
    ends (signed), viridis for |x|."""
    from studio_ui.figures import vtk_scene

    def rgb(lut, v: float) -> tuple[int, ...]:
        c = [0.0, 0.0, 0.0]
        lut.GetColor(v, c)
        return tuple(round(x * 255) for x in c)

    signed = vtk_scene.lookup_table(False, 10.0)
    assert signed.GetTableRange() == (-10.0, 10.0)
    assert rgb(signed, -10.0) == (0x05, 0x30, 0x61)
    assert rgb(signed, 10.0) == (0x67, 0x00, 0x1F)
    assert max(abs(x - 0xB4) for x in rgb(signed, 0.0)) <= 2  # the grey, to one 256th
    viridis = vtk_scene.lookup_table(True, 4.0)
    assert viridis.GetTableRange() == (0.0, 4.0)
    assert rgb(viridis, 0.0) == (0x44, 0x01, 0x54)
    assert rgb(viridis, 4.0) == (0xFD, 0xE7, 0x25)


@pytest.mark.parametrize(
    ("values", "ticks"),
    [
        # the case: Plotly labelled 20, 30, 40 as "2", "3", "4"
        ([20.0, 31.0, 40.0], ["20", "25", "30", "35", "40"]),
        ([2.9, 310.0], ["5", "10", "20", "50", "100", "200"]),
        ([3.0, 4.1e4], ["10", "100", "1,000", "10,000"]),
    ],
)
def test_kurtosis_log_axis_ticks_are_true_values(values: list[float], ticks: list[str]) -> None:
    rows = pd.DataFrame({"layer": range(len(values)), "kind": "o_proj", "kurtosis": values})
    y = figs.kurtosis_figure(rows).layout.yaxis
    assert (y.type, y.tickmode) == ("log", "array")
    assert list(y.ticktext) == ticks
    # each label is its tick's value, and every value lies inside the drawn (log10) range
    assert [float(t.replace(",", "")) for t in y.ticktext] == list(y.tickvals)
    lo, hi = y.range
    assert lo < np.log10(min(values)) and np.log10(max(values)) < hi
    assert all(lo <= np.log10(v) <= hi for v in y.tickvals)


@pytest.mark.parametrize(
    ("lo", "hi", "most", "whole", "expected"),
    [
        (0, 63, 6, True, [0, 10, 20, 30, 40, 50, 60, 70]),
        (0, 173, 4, True, [0, 100, 200]),  # a prime span: round ticks, the box goes to 200
        (0, 3, 4, True, [0, 1, 2, 3]),
        (0, 1, 4, True, [0, 1]),  # whole numbers only: never 0.5
        (16, 176, 6, True, [0, 50, 100, 150, 200]),
        (0, 6143, 6, True, [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000]),
        (-16.39, 18.03, 5, False, [-20, -10, 0, 10, 20]),
        (-2.97, 2.97, 5, False, [-3, -2, -1, 0, 1, 2, 3]),
        (0.001, 0.0042, 5, False, [0.001, 0.002, 0.003, 0.004, 0.005]),
        (5, 5, 4, True, [5, 5]),  # one token: its value at both ends
    ],
)
def test_png_ticks_are_round_and_cover_the_data(lo, hi, most, whole, expected) -> None:
    """The PNG's box axes label evenly spaced ticks: round numbers (whole for channels and
    tokens) from at or below the data to at or above it, so each label sits at its value."""
    from studio_ui.figures.vtk_scene import nice_ticks

    t = nice_ticks(lo, hi, most, whole=whole)
    np.testing.assert_allclose(t, expected, rtol=0, atol=1e-12)
    assert t[0] <= lo and t[-1] >= hi
    if whole:
        assert np.array_equal(t, np.round(t))
    assert np.allclose(np.diff(t), t[1] - t[0])
