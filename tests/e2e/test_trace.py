"""End-to-end: the Trace page in headless Chromium shows module calls and two profiles' diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import wait_for_app
from tests.trace.test_page import seed

pytestmark = pytest.mark.e2e


def test_trace_page_shows_both_views(studio_factory, page, tmp_path: Path) -> None:
    ws_dir = tmp_path / "e2e-workspace"
    seed(ws_dir, tmp_path)
    server = studio_factory(ws_dir)
    page.goto(f"{server.url}/trace")
    wait_for_app(page)
    page.get_by_text("Calls per module class").wait_for()
    page.get_by_text("model.layers.0.self_attn.qkv_proj").first.wait_for(state="attached")
    page.locator(".js-plotly-plot").first.wait_for()
    page.wait_for_timeout(1500)
    shot_calls = tmp_path / "trace-calls.png"
    page.screenshot(path=str(shot_calls), full_page=True)
    # Streamlit scrolls inside its own container: a tall viewport shows the whole page.
    page.set_viewport_size({"width": 1400, "height": 2200})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(tmp_path / "trace-call-order.png"))

    page.get_by_role("tab", name="Profiles").click()
    page.get_by_text("Largest changes").first.wait_for()
    page.get_by_text("Time per layer and family").first.wait_for()
    page.get_by_text("paged_attention_v2_kernel").first.wait_for(state="attached")
    body = page.inner_text("body")
    assert "nsys" in body and "kineto-gpu" in body and "Difference" in body
    page.wait_for_timeout(2000)
    shot = tmp_path / "trace-profiles.png"
    page.screenshot(path=str(shot), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 3600})
    page.wait_for_timeout(1500)
    page.screenshot(path=str(tmp_path / "trace-profiles-all.png"))
    assert shot_calls.stat().st_size > 20_000 and shot.stat().st_size > 20_000


def test_trace_page_self_time_of_a_cpu_profile(studio_factory, page, tmp_path: Path) -> None:
    """A real CPU torch.profiler trace: ops ranked by self time, with self and total bars."""
    from studio_backend.trace.ingest import ingest_profile
    from studio_backend.workspace import open_workspace
    from tests.trace.conftest import make_cpu_trace

    ws_dir = tmp_path / "e2e-workspace"
    ws = open_workspace(ws_dir)
    ingest_profile(ws, make_cpu_trace(tmp_path / "cpu.json")[0], name="cpu-profile")
    ws.close()
    server = studio_factory(ws_dir)
    page.goto(f"{server.url}/trace")
    wait_for_app(page)
    page.get_by_role("tab", name="Profiles").click()
    page.get_by_text("Top kernels / ops by self time").first.wait_for()
    page.get_by_text("total (with children)").first.wait_for(state="attached")
    page.set_viewport_size({"width": 1400, "height": 2000})
    page.wait_for_timeout(2000)
    shot = tmp_path / "trace-self-time.png"
    page.screenshot(path=str(shot))
    assert "aten::mm" in page.inner_text("body") and shot.stat().st_size > 20_000


def test_trace_module_calls_button_in_the_browser(studio_factory, page, tmp_path: Path) -> None:
    """Issue 18 item 2: the form's "Trace module calls" runs transformers in the studio (it used
    to fail on a `kernels` import shadowed by the project) and stores every decoder layer."""
    import json

    from studio_backend.models.create import create_model
    from studio_backend.workspace import open_workspace

    model = create_model(tmp_path / "tiny", preset="tiny", seed=0)
    ws_dir = tmp_path / "e2e-workspace"
    server = studio_factory(ws_dir)
    page.goto(f"{server.url}/trace")
    wait_for_app(page)
    page.get_by_label("Model directory (HF format)").fill(str(model))
    page.get_by_role("button", name="Trace module calls").click()
    page.get_by_text("Calls per module class").wait_for(timeout=240_000)
    body = page.inner_text("body")
    assert "ImportError" not in body and "Traceback" not in body
    page.screenshot(path=str(tmp_path / "trace-clicked.png"), full_page=True)
    ws = open_workspace(ws_dir, read_only=True)  # the studio holds it: its read service answers
    try:
        q = ws.cursor().execute
        (n_calls,) = q("SELECT n_calls FROM trace_runs").fetchone()
        stored = q("SELECT count(*) FROM trace_calls").fetchone()[0]
        layers = {r[0] for r in q("SELECT DISTINCT layer FROM trace_calls "
                                  "WHERE layer IS NOT NULL").fetchall()}  # fmt: skip
    finally:
        ws.close()
    n_layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    assert stored == n_calls > 0 and layers == set(range(n_layers))
