"""End-to-end: Home's "Run the demo" button writes a real tp=2 msit dump from the browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
pytest.importorskip("msit_llm")


def test_home_demo_button(studio_factory, page, tmp_path: Path) -> None:
    ws_dir = tmp_path / "demo-workspace"
    server = studio_factory(ws_dir)
    page.goto(server.url)
    wait_for_app(page)
    page.get_by_role("button", name="Run the demo").click()
    page.get_by_text("prompt tokens,").wait_for(timeout=240_000)  # the final message
    [root] = list((ws_dir / "dumps").glob("msit_dump_*"))
    assert root.name in page.inner_text("body")
    assert len(list((root / "torch_tensors").iterdir())) == 2
    page.get_by_text("prompt tokens,").scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    shot = tmp_path / "home_demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
