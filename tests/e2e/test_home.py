"""End-to-end: Home in headless Chromium shows the real workspace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio_backend.workspace import open_workspace
from tests.e2e.conftest import REPO, wait_for_app

pytestmark = pytest.mark.e2e


def test_home_shows_workspace(studio_factory, page, tmp_path: Path) -> None:
    ws_dir = tmp_path / "e2e-workspace"
    ws = open_workspace(ws_dir)
    ws.log("test", "seeded activity entry 7f3a")
    counts = ws.table_counts()
    ws.close()

    server = studio_factory(ws_dir)
    page.goto(server.url)
    wait_for_app(page)
    # st.dataframe paints on a canvas; its accessible cells exist in the DOM but are hidden.
    page.get_by_text("seeded activity entry 7f3a").wait_for(state="attached")
    page.get_by_text("Hardware stacks").wait_for()
    body = page.inner_text("body")
    assert "e2e-workspace" in body
    assert f"{sum(counts.values()):,}" in body
    page.wait_for_timeout(1000)  # let the data grids paint before the screenshot
    shot = tmp_path / "home.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_cli_names_the_running_studio(studio_factory, page, tmp_path: Path) -> None:
    ws_dir = tmp_path / "held-by-studio"
    server = studio_factory(ws_dir)
    page.goto(server.url)
    wait_for_app(page)
    page.get_by_text("Schema version").wait_for()  # the server process now owns the workspace
    # Reading commands are answered by the running studio (read service) ...
    info = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(ws_dir), "info", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["workspace"] == str(ws_dir.resolve())
    # ... writing ones are refused, naming the studio.
    out = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(ws_dir), "ingest", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"in use by the studio (PID {server.proc.pid}, {server.url})" in out.stderr
    assert "Traceback" not in out.stderr


def test_deep_link_as_first_request_uses_navigation(studio_factory, page, tmp_path: Path) -> None:
    server = studio_factory(tmp_path / "deep-link")
    page.goto(f"{server.url}/trace")  # the very first request of this server process
    wait_for_app(page)
    nav = page.locator("[data-testid='stSidebarNav']")
    nav.get_by_text("Sparse attention", exact=True).wait_for()  # our titles, not file names
    assert "run studio" not in nav.inner_text()
    assert page.locator("h1").first.inner_text().strip() == "Trace"
