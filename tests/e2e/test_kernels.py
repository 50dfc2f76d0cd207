"""End-to-end: the Kernels page in headless Chromium with a real tiny-preset run (CPU), a
serve run against the stand-in server, and a JSON import through the uploader."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_backend.bench.harness import KernelBenchConfig, run_kernel_bench
from studio_backend.bench.results import save_result, write_json
from studio_backend.bench.serve import ServeBenchConfig, run_serve_bench
from studio_backend.workspace import open_workspace
from tests.bench.standin import StandIn
from tests.bench.test_results import _doc
from tests.e2e.conftest import wait_for_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_kernels_page(studio_factory, page, tmp_path: Path) -> None:
    ws_dir = tmp_path / "kernels-ws"
    ws = open_workspace(ws_dir)
    measured = run_kernel_bench(
        KernelBenchConfig(preset="tiny", batches=[1, 2, 4, 8], device="cpu", reps=5, rotations=2)
    )
    save_result(ws, measured)
    with StandIn(token_s=0.0005) as srv:
        save_result(
            ws, run_serve_bench(ServeBenchConfig(url=srv.url, batches=[1, 2, 4], output_tokens=32))
        )
    ws.close()
    upload = tmp_path / "h100-example.json"
    doc = _doc()
    doc["run"]["name"] = "uploaded 4f2c"
    write_json(doc, upload)

    server = studio_factory(ws_dir)
    page.goto(f"{server.url}/kernels")
    wait_for_app(page)
    page.get_by_text("Kernel micro-benchmark").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    body = page.inner_text("body")
    assert "Not measured by the studio" in body
    # the measured fused row's latency is in the table (canvas grid: accessible cells attached)
    fused_b1 = next(
        r for r in measured["kernel_results"] if r["batch"] == 1 and r["impl"] != "reference"
    )
    page.get_by_text("fused-torch-cpu").first.wait_for(state="attached")
    legend = page.locator(".legendtext").all_text_contents()
    assert any("Ascend 910B (seed 002) / fused (published)" in t for t in legend)
    assert any("fused-torch-cpu" in t for t in legend)
    # the CPU tiny-preset run and the published 910B Qwen3-30B series never share an axis
    for plot in page.locator(".js-plotly-plot").all():
        names = plot.locator(".legendtext").all_text_contents()
        assert not (any("fused-torch-cpu" in n for n in names)
                    and any("(published)" in n for n in names)), names  # fmt: skip
    assert fused_b1["median_us"] > 0

    page.locator("[data-testid='stExpander'] summary").first.click()
    page.locator("input[type='file']").set_input_files(str(upload))
    page.get_by_text("imported run abc123").wait_for()
    wait_for_app(page)
    # Streamlit scrolls inside its own container: a tall viewport shows the whole page
    page.set_viewport_size({"width": 1400, "height": 3400})
    page.wait_for_timeout(2500)  # let the charts paint before the screenshot
    shot = tmp_path / "kernels.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 30_000
    # the imported run is listed among the runs to choose from
    assert "uploaded 4f2c" in page.inner_text("body")
