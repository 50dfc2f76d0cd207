"""End-to-end: the Experts page in headless Chromium shows the heatmap of a real import."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_backend.moe import store
from studio_backend.moe.detect import read_source
from studio_backend.workspace import open_workspace
from tests.e2e.conftest import wait_for_app
from tests.moe import fixtures

pytestmark = pytest.mark.e2e


def test_experts_heatmap(studio_factory, page, tmp_path: Path) -> None:
    ws_dir = tmp_path / "e2e-workspace"
    fixtures.sglang_stat(tmp_path / "rec.pt", steps=6, layers=6, experts=16)
    ws = open_workspace(ws_dir)
    (load,) = read_source(tmp_path / "rec.pt", num_devices=4)
    store.save(ws, load, "sglang-stat-demo")
    summary = store.aggregate(ws, "sglang-stat-demo").summary
    ws.close()

    server = studio_factory(ws_dir)
    page.goto(f"{server.url}/experts?source=sglang-stat-demo")
    wait_for_app(page)
    page.get_by_text("Tokens per layer and expert").wait_for()
    page.get_by_text("Tokens per layer and device").wait_for()
    assert page.locator(".js-plotly-plot").count() >= 3  # two heatmaps + evolution
    body = page.inner_text("body")
    assert f"{summary['sglang_balancedness']:.4f}" in body
    page.wait_for_timeout(1500)
    shot = tmp_path / "experts.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.get_by_text("Balance per layer").scroll_into_view_if_needed()
    page.get_by_text("Hot experts").scroll_into_view_if_needed()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(tmp_path / "experts-balance.png"))
