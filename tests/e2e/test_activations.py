"""End-to-end: the Activations page in headless Chromium on an ingested dump with planted outliers.

The dump is written by tests/analysis/dumpdata.py (msit layout, seeded synthetic activations,
outlier channels 11 and 42, a massive activation at token 0 / channel 42) and ingested through
the dumps package's public ``ingest_dump``; token text comes from a tokenizer built by the
model package's ``write_tokenizer``.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.e2e.conftest import surface_frame, wait_for_app

pytestmark = pytest.mark.e2e

_surface_frame = surface_frame


def _filled_workspace(tmp_path: Path) -> tuple[Path, Path]:
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.models.tokenizer import write_tokenizer
    from studio_backend.workspace import open_workspace
    from tests.analysis.dumpdata import write_dump

    session, _ = write_dump(tmp_path / "dump", tokens=40)
    tok = tmp_path / "tokenizer"
    tok.mkdir()
    write_tokenizer(tok, 512)
    ws_dir = tmp_path / "ws"
    ws = open_workspace(ws_dir)
    ingest_dump(ws, session)
    ws.close()
    return ws_dir, tok


def test_activations_surface_and_table(studio_factory, page, tmp_path: Path) -> None:
    ws_dir, tok = _filled_workspace(tmp_path)
    server = studio_factory(ws_dir)
    query = urllib.parse.urlencode(
        {"pattern": r"layers\.2\.input_layernorm", "io": "input", "tokenizer": str(tok), "log": "1"}
    )
    t0 = time.monotonic()
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    # The Plotly surface is painted once its WebGL canvas exists inside the gl container.
    _surface_frame(page).locator(".js-plotly-plot .gl-container canvas").first.wait_for(
        timeout=120_000
    )
    painted_s = time.monotonic() - t0
    assert painted_s < 30, painted_s
    page.get_by_text("top channel").first.wait_for()
    body = page.inner_text("body")
    assert "model.layers.2.input_layernorm input_0 step 0" in body
    page.wait_for_timeout(2500)  # let WebGL finish drawing before the screenshot
    _surface_frame(page).locator(".js-plotly-plot").first.screenshot(
        path=str(tmp_path / "surface.png")
    )
    page.screenshot(path=str(tmp_path / "activations.png"), full_page=True)

    page.get_by_role("tab", name="Statistics").click()
    page.get_by_text("Top outliers").wait_for()
    grid = page.locator("[data-testid='stDataFrame']").first
    # st.dataframe paints on a canvas; its accessible cells exist in the DOM but are hidden.
    grid.locator("[data-testid='glide-cell-2-0']").wait_for(state="attached")
    cells = grid.locator("td[role='gridcell']").all_text_contents()
    rows = [cells[i : i + 4] for i in range(0, len(cells), 4)]  # token, text, channel, value
    # Row 1: token 0 / channel 42 holds the massive activation (2500 x 3 in bf16 = 7488).
    assert (rows[0][0], rows[0][2], rows[0][3]) == ("0", "42", "7488"), rows[:3]
    assert rows[0][1] != ""  # the token's text, decoded by the tokenizer
    # The next ones are all in the two planted outlier channels.
    assert {r[2] for r in rows[:10]} == {"11", "42"}, rows[:10]
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "statistics.png"), full_page=True)


@pytest.mark.slow
def test_demo_run_planted_channels_and_kronecker(studio_factory, page, tmp_path: Path) -> None:
    """Reference engine (tp=2, msit dumps incl. api-mode npu_kronecker_quant) on the tiny model
    with planted outlier channels: those channels top the channel table and the 3D view."""
    import json

    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.engines.reference.dumping import DumpOptions
    from studio_backend.engines.reference.offline import run_offline
    from studio_backend.models.create import create_model
    from studio_backend.workspace import open_workspace

    model = create_model(tmp_path / "model", preset="tiny", seed=0, outliers=True)
    planted = json.loads((model / "studio_model.json").read_text())["outliers"]["channels"]
    dump = DumpOptions(tool="msit", dump_path=tmp_path / "dump", token_range=[0, 1],
                       mode=["module", "api"], api_list=["npu_kronecker_quant"])  # fmt: skip
    res = run_offline(model, tp=2, prompts=["Outliers live in a few channels of LLMs."],
                      max_tokens=2, dump=dump)  # fmt: skip
    ws = open_workspace(tmp_path / "ws")
    ingest_dump(ws, res.dump_root)
    ws.close()

    server = studio_factory(tmp_path / "ws")
    query = urllib.parse.urlencode(
        {"pattern": r"layers\.1\.self_attn\.qkv_proj", "io": "input", "tokenizer": str(model)}
    )
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    frame = _surface_frame(page)
    frame.locator(".js-plotly-plot .gl-container canvas").first.wait_for(timeout=120_000)
    page.get_by_text("top channel").first.wait_for()
    page.wait_for_timeout(2500)
    frame.locator(".js-plotly-plot").first.screenshot(path=str(tmp_path / "demo_surface.png"))

    page.get_by_role("tab", name="Statistics").click()
    page.get_by_text("Top channels by absmax").wait_for()
    tables = page.locator("[data-testid='stDataFrame']")
    chan_grid = tables.nth(1)
    chan_grid.locator("[data-testid='glide-cell-0-1']").wait_for(state="attached")
    cells = chan_grid.locator("td[role='gridcell']").all_text_contents()
    width = 7  # channel, absmax, token, text, value, mean_abs, tokens_over_6
    top2 = {cells[0], cells[width]}
    assert top2 == {str(c) for c in planted}, cells[: 2 * width]
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "demo_statistics.png"), full_page=True)

    page.get_by_role("tab", name="Kronecker").click()
    page.get_by_text("The dumped quantized output matches").wait_for()
    assert "P1^T @ x @ P2" in page.inner_text("body")
    page.wait_for_timeout(2500)
    page.screenshot(path=str(tmp_path / "demo_kronecker.png"), full_page=True)


def test_pyvista_renderer_paints(studio_factory, page, tmp_path: Path) -> None:
    """The PyVista view (stpyvista, trame backend: vtk.js, offline) shows the same surface."""
    ws_dir, _ = _filled_workspace(tmp_path)
    server = studio_factory(ws_dir)
    query = urllib.parse.urlencode({"pattern": r"layers\.2\.input_layernorm", "io": "input"})
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    page.get_by_text("PyVista", exact=True).click()
    wait_for_app(page)
    frame = page.frame_locator("iframe").first
    frame.locator("canvas").first.wait_for(timeout=60_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(tmp_path / "pyvista.png"), full_page=True)


def _drawn_surface(page):  # noqa: ANN001, ANN202
    """The surface component's plot once its WebGL canvas exists, and the component's frame."""
    plot = _surface_frame(page).locator(".js-plotly-plot").first
    plot.locator(".gl-container canvas").first.wait_for(timeout=120_000)
    return plot, next(f for f in page.frames if "studio_surface" in f.url)


def _hover_texts(page, plot) -> list[str]:
    """Sweep the mouse over the WebGL surface; the hover labels plotly.js drew on the way."""
    box = plot.bounding_box()
    seen: list[str] = []
    for fy in (0.6, 0.65, 0.7, 0.75):
        for fx in (0.35, 0.45, 0.55, 0.65):
            page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=3)
            page.wait_for_timeout(300)
            seen += [t.text_content() for t in plot.locator(".hovertext").all()]
    return [s for s in seen if s]


_HOVER = re.compile(r"token (\d+) '(.*)'channel (\d+) \(rank (\d+)\)value (-?[\d.e+-]+)")


def test_surface_hover_names_token_channel_value(studio_factory, page, tmp_path: Path) -> None:
    """Sorted channels: the hover carries the token, its text, the REAL channel id and the
    value, checked against the dump's own arrays (tests/analysis/dumpdata.py)."""
    import numpy as np

    from tests.analysis.dumpdata import write_dump

    ws_dir, tok = _filled_workspace(tmp_path)
    _, truth = write_dump(tmp_path / "oracle", tokens=40)
    x = truth[("model.layers.2.input_layernorm", "input", 0)]
    order = np.argsort(-np.abs(x).max(axis=0), kind="stable")
    server = studio_factory(ws_dir)
    query = urllib.parse.urlencode(
        {
            "pattern": r"layers\.2\.input_layernorm",
            "io": "input",
            "tokenizer": str(tok),
            "sort": "1",
        }
    )
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    plot, _ = _drawn_surface(page)
    page.wait_for_timeout(2500)
    hits = [m for m in map(_HOVER.fullmatch, _hover_texts(page, plot)) if m]
    assert len(hits) >= 3, hits
    for m in hits:
        token, channel, rank, value = int(m[1]), int(m[3]), int(m[4]), float(m[5])
        assert channel == order[rank], (m[0], order[:8])
        # bf16 in the stitched store; the label shows 4 significant digits.
        assert value == pytest.approx(float(x[token, channel]), rel=1e-2, abs=1e-2), m[0]
    assert any(m[2] for m in hits)  # the tokens' text (a byte-level piece may decode to '')
    page.screenshot(path=str(tmp_path / "hover.png"), full_page=True)


_HOVER_TEXT = re.compile(r"token (\d+) (.*)channel (\d+)value (-?[\d.e+-]+)")


@pytest.mark.slow
def test_demo_hover_shows_token_text_without_typing(demo_workspace: Path, studio_factory, page,
                                                    tmp_path: Path) -> None:  # fmt: skip
    """On a ``studio demo`` workspace the tokenizer field is pre-filled with the demo model's
    folder (from the demo's launch record): the hover names each token's text, as the demo
    tokenizer decodes the dumped embed_tokens input ids, with nothing typed."""
    import json

    import torch
    from playwright.sync_api import expect
    from tokenizers import Tokenizer

    from studio_backend.engines.demo import DEMO_MODEL

    model = (demo_workspace / "models" / DEMO_MODEL).resolve()
    (root,) = (demo_workspace / "dumps").glob("msit_dump_*")
    rank0 = next(f for f, r in json.loads((root / "ranks.json").read_text()).items() if r == 0)
    step0 = root / "torch_tensors" / rank0 / "0" / "root.model.embed_tokens"
    ids = torch.load(step0 / "input_0.pth", weights_only=True).reshape(-1).tolist()
    x = torch.load(step0 / "output.pth", weights_only=True).float().numpy()
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    server = studio_factory(demo_workspace)
    query = urllib.parse.urlencode({"pattern": "embed_tokens$", "io": "output"})
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    field = page.get_by_role("textbox", name="Tokenizer directory (optional)")
    page.screenshot(path=str(tmp_path / "demo_opened.png"), full_page=True)
    expect(field).to_have_value(str(model), timeout=30_000)  # nothing typed
    plot, _ = _drawn_surface(page)
    page.wait_for_timeout(2500)
    hits = [m for m in map(_HOVER_TEXT.fullmatch, _hover_texts(page, plot)) if m]
    assert len(hits) >= 3, hits
    for m in hits:
        token, channel, value = int(m[1]), int(m[3]), float(m[4])
        assert m[2] == repr(tok.decode([ids[token]])), m[0]  # the page shows repr(text)
        assert value == pytest.approx(float(x[token, channel]), rel=1e-2, abs=1e-2), m[0]
    page.screenshot(path=str(tmp_path / "demo_hover.png"), full_page=True)


_HOVER_ABS = re.compile(r"token (\d+)channel (\d+)value (-?[\d.e+-]+)\|value\| ([\d.e+-]+)")
_TITLE = "() => document.querySelector('.js-plotly-plot')._fullLayout.scene.zaxis.title.text"


def test_toggle_redraws_in_place_and_hover_keeps_positions(
    studio_factory, page, tmp_path: Path
) -> None:
    """A toggle applies the new figure to the same plot and WebGL canvas (Plotly.react in the
    component, no new context), and in |x| mode the hover still carries the exact token and
    channel numbers and the signed value, checked against the dump's own arrays."""
    from tests.analysis.dumpdata import write_dump

    ws_dir, _ = _filled_workspace(tmp_path)
    _, truth = write_dump(tmp_path / "oracle", tokens=40)
    x = truth[("model.layers.2.input_layernorm", "input", 0)]
    server = studio_factory(ws_dir)
    query = urllib.parse.urlencode({"pattern": r"layers\.2\.input_layernorm", "io": "input"})
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    plot, frame = _drawn_surface(page)
    frame.wait_for_function(f"() => ({_TITLE})() === 'value'")
    frame.evaluate(
        "() => { const gd = document.querySelector('.js-plotly-plot');"
        " gd.__mark = 1; gd.querySelector('.gl-container canvas').__mark = 1; }"
    )
    page.get_by_text("Absolute values |x|", exact=True).click()
    frame.wait_for_function(f"() => ({_TITLE})() === '|value|'", timeout=60_000)
    wait_for_app(page)
    same = frame.evaluate(
        "() => { const gd = document.querySelector('.js-plotly-plot');"
        " return [gd.__mark, gd.querySelector('.gl-container canvas').__mark]; }"
    )
    assert same == [1, 1]  # the same plot and canvas: redrawn in place
    assert "abs=1" in page.url  # the deep link follows the toggle
    page.wait_for_timeout(2500)
    hits = [m for m in map(_HOVER_ABS.fullmatch, _hover_texts(page, plot)) if m]
    assert len(hits) >= 3, hits
    for m in hits:
        token, channel, value, shown = int(m[1]), int(m[2]), float(m[3]), float(m[4])
        assert value == pytest.approx(float(x[token, channel]), rel=1e-2, abs=1e-2), m[0]
        assert shown == pytest.approx(abs(value), rel=1e-3), m[0]
    page.screenshot(path=str(tmp_path / "toggled.png"), full_page=True)


_HOVER_SORTED_ABS = re.compile(
    r"token (\d+)channel (\d+) \(rank (\d+)\)value (-?[\d.e+-]+)\|value\| ([\d.e+-]+)"
)
_DRAWS = "() => window.__draws"


def test_component_toggle_draws_before_the_server_and_the_page_follows(
    studio_factory, page, tmp_path: Path
) -> None:
    """The surface's own |x| toggle redraws in the browser while every message to the server
    is held back (no rerun can happen); released, the server takes the state over (sidebar
    toggle, deep link) and its rerun does not draw again. The sidebar toggle drives the
    component the other way; sorted |x| hover keeps the real token, channel and signed value."""
    import numpy as np

    from tests.analysis.dumpdata import write_dump

    ws_dir, _ = _filled_workspace(tmp_path)
    _, truth = write_dump(tmp_path / "oracle", tokens=40)
    x = truth[("model.layers.2.input_layernorm", "input", 0)]
    order = np.argsort(-np.abs(x).max(axis=0), kind="stable")
    server = studio_factory(ws_dir)
    hold = {"on": False, "held": []}

    def route(ws) -> None:
        upstream = ws.connect_to_server()

        def to_server(msg) -> None:
            if hold["on"]:
                hold["held"].append((upstream, msg))
            else:
                upstream.send(msg)

        ws.on_message(to_server)
        upstream.on_message(ws.send)

    page.route_web_socket(re.compile(r".*/_stcore/stream.*"), route)
    query = urllib.parse.urlencode({"pattern": r"layers\.2\.input_layernorm", "io": "input"})
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    plot, frame = _drawn_surface(page)
    frame.wait_for_function(f"() => ({_TITLE})() === 'value'")
    wait_for_app(page)
    sidebar_abs = page.get_by_role("switch", name="Absolute values |x|")
    assert not sidebar_abs.is_checked()
    draws = frame.evaluate(_DRAWS)

    hold["on"] = True
    frame.locator("#t-abs").click()
    frame.wait_for_function(f"() => ({_TITLE})() === '|value|'", timeout=90_000)
    zmin = frame.evaluate(
        "() => Math.min(...document.querySelector('.js-plotly-plot').data[0].z"
        ".map(r => Math.min(...r)))"
    )
    assert zmin >= 0  # |x| drawn
    assert frame.evaluate(_DRAWS) == draws + 1
    deadline = time.time() + 10
    while not hold["held"] and time.time() < deadline:  # the state report, after the draw
        page.wait_for_timeout(100)
    assert hold["held"], "the component did not report its state"
    assert not sidebar_abs.is_checked() and "abs=1" not in page.url  # the server has not run

    hold["on"] = False
    for upstream, msg in hold["held"]:
        upstream.send(msg)
    page.wait_for_url(re.compile(r".*abs=1.*"), timeout=90_000)
    wait_for_app(page)
    assert sidebar_abs.is_checked()
    page.wait_for_timeout(1000)
    assert frame.evaluate(_DRAWS) == draws + 1  # the rerun's echo of the state drew nothing

    page.get_by_text("Sort channels by absmax", exact=True).click()
    frame.wait_for_function(
        "() => document.querySelector('.js-plotly-plot')._fullLayout.scene.xaxis.title.text"
        " === 'channel rank'",
        timeout=60_000,
    )
    assert frame.locator("#t-sort").is_checked() and frame.locator("#t-abs").is_checked()
    page.wait_for_url(re.compile(r".*sort=1.*"), timeout=90_000)
    wait_for_app(page)
    page.wait_for_timeout(2500)
    hits = [m for m in map(_HOVER_SORTED_ABS.fullmatch, _hover_texts(page, plot)) if m]
    assert len(hits) >= 3, hits
    for m in hits:
        token, channel, rank = int(m[1]), int(m[2]), int(m[3])
        value, shown = float(m[4]), float(m[5])
        assert channel == order[rank], (m[0], order[:8])
        assert value == pytest.approx(float(x[token, channel]), rel=1e-2, abs=1e-2), m[0]
        assert shown == pytest.approx(abs(value), rel=1e-3), m[0]


def test_surface_marks_nan_and_inf_cells(studio_factory, page, tmp_path: Path) -> None:
    """NaN / inf cells (an fp16 overflow) are holes in a WebGL surface: each is marked by a
    magenta diamond whose hover names its token, channel and value; |x| keeps the marks."""
    import torch

    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.workspace import open_workspace
    from tests.analysis.dumpdata import write_dump

    session, _ = write_dump(tmp_path / "dump", tokens=40)
    (f,) = session.rglob("0/root.model.layers.2.input_layernorm/input_0.pth")
    t = torch.load(f, weights_only=True)
    t[5, 7], t[9, 20], t[12, 30] = float("nan"), float("inf"), float("-inf")
    torch.save(t, f)
    ws = open_workspace(tmp_path / "ws")
    ingest_dump(ws, session)
    ws.close()
    server = studio_factory(tmp_path / "ws")
    query = urllib.parse.urlencode({"pattern": r"layers\.2\.input_layernorm", "io": "input"})
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    plot, frame = _drawn_surface(page)
    marks = "() => { const d = document.querySelector('.js-plotly-plot').data; " \
            "return d.length > 1 ? [d[1].type, d[1].customdata, d[1].z] : null; }"  # fmt: skip
    frame.wait_for_function(marks, timeout=60_000)
    kind, custom, z = frame.evaluate(marks)
    assert kind == "scatter3d"
    assert sorted(map(tuple, custom)) == [(5, 7, "NaN"), (9, 20, "+inf"), (12, 30, "-inf")]
    by_cell = {(c[0], c[1]): h for c, h in zip(custom, z, strict=True)}
    zs = frame.evaluate(
        "() => document.querySelector('.js-plotly-plot').data[0].z.flatMap(r => Array.from(r))"
        ".filter(Number.isFinite)"
    )
    assert by_cell[(5, 7)] == 0 and by_cell[(9, 20)] == max(zs) and by_cell[(12, 30)] == min(zs)
    frame.locator("#t-abs").click()
    frame.wait_for_function(f"() => ({_TITLE})() === '|value|'", timeout=90_000)
    kind, custom, _ = frame.evaluate(marks)
    assert len(custom) == 3  # still marked under |x| (the values are the raw ones)
    page.screenshot(path=str(tmp_path / "nan_marks.png"), full_page=True)
