"""End-to-end: the Compare page names the first divergence of a planted fault across TP
layouts, and opens the 3D A / B / A - B view of that tensor (headless Chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compare.test_page import make_pair
from tests.e2e.conftest import wait_for_app

pytestmark = pytest.mark.e2e


def test_compare_page_first_divergence_and_3d(studio_factory, page, tmp_path: Path) -> None:
    from studio_backend.workspace import open_workspace

    wsdir = tmp_path / "e2e-workspace"
    ws = open_workspace(wsdir)
    try:
        a, b = make_pair(tmp_path, ws)
    finally:
        ws.close()
    server = studio_factory(wsdir)
    page.set_viewport_size({"width": 1500, "height": 2200})
    page.goto(f"{server.url}/compare?a={a}&b={b}")
    wait_for_app(page)
    page.get_by_text("First divergence:").wait_for(timeout=120_000)
    body = page.inner_text("body")
    assert "model.layers.1.mlp.down_proj output_0" in body
    assert "first at token 0" in body
    # the heatmap (Plotly) and the 3D view (an iframe with three WebGL scenes) are drawn
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    frame = page.frame_locator("iframe").first
    frame.locator(".js-plotly-plot").wait_for(timeout=60_000)
    assert frame.locator(".gl-container, canvas").count() >= 1
    page.wait_for_timeout(3000)  # let WebGL paint
    shot = tmp_path / "compare.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 30_000
    # clicking a heatmap cell opens that tensor's 3D view: the first row (layer 0's norm)
    drag = page.locator(".js-plotly-plot .nsewdrag").first
    box = drag.bounding_box()
    rows = 24  # 3 layers x 8 output tensors of the synthetic dense model
    page.mouse.click(box["x"] + box["width"] / 12, box["y"] + box["height"] / rows / 2)
    page.get_by_text("A model.layers.0.input_layernorm vs B", exact=False).wait_for(timeout=60_000)
    assert "cosine 1.00000000" in page.inner_text("body")  # identical in both runs
    page.wait_for_timeout(3000)  # the 3D view is redrawn for the clicked tensor
    page.screenshot(path=str(tmp_path / "compare_clicked.png"), full_page=True)
