"""End-to-end: a Hugging Face [batch, seq, hidden] dump written by msprobe, on the Activations
page in headless Chromium: the token axis is shown, the surface is 14 tokens deep and the top
outlier sits at token 9, channel 5 (not "token 1, channel 133")."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.e2e.conftest import surface_frame, wait_for_app

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_hf_dump_token_axis_on_page(studio_factory, page, tmp_path: Path) -> None:
    pytest.importorskip("msprobe")
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.workspace import open_workspace

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kernels")])}
    subprocess.run([sys.executable, "-m", "tests.dumps.hf_tiny", "msprobe", str(tmp_path / "hf")],
                   cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)  # fmt: skip
    ws_dir = tmp_path / "ws"
    ws = open_workspace(ws_dir)
    ingest_dump(ws, tmp_path / "hf" / "dump")
    ws.close()
    server = studio_factory(ws_dir)
    query = urllib.parse.urlencode({"pattern": r"embed_tokens$"})
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    surface_frame(page).locator(".js-plotly-plot .gl-container canvas").first.wait_for(
        timeout=120_000
    )
    body = page.inner_text("body")
    assert "shape [2, 7, 64] viewed as [batch, seq, hidden] = 14 tokens x 64 channels" in body
    assert "Stored: [batch, seq, hidden] (format" in body
    page.wait_for_timeout(2000)
    page.screenshot(path=str(tmp_path / "token_axis.png"), full_page=True)
    page.get_by_role("tab", name="Statistics").click()
    page.get_by_text("Top outliers").wait_for()
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.locator("[data-testid='glide-cell-2-0']").wait_for(state="attached")
    cells = grid.locator("td[role='gridcell']").all_text_contents()
    assert cells[:3] == ["9", "5", "40"], cells[:6]  # token, channel, value
