"""End-to-end: the Dumps page ingests a tp=4 dump typed into the form and shows the proof."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studio_backend.dumps import synthetic as S
from tests.e2e.conftest import wait_for_app

pytestmark = pytest.mark.e2e


def test_dumps_page_ingests_and_reports(studio_factory, page, tmp_path: Path) -> None:
    cfg = S.SynthConfig(layers=3, dense_layers=(0,))
    truth = S.make_truth(cfg, [12, 1, 1], seed=7, outlier=400.0)
    session = S.write_msit(tmp_path / "dump", cfg, truth, 4, dtype=torch.bfloat16)
    torch.save({"not": "a tensor"}, session / "torch_tensors" / "npu2_4002" / "2" / "root.model.layers.2.mlp.gate"
               / "input_0.pth")  # fmt: skip
    server = studio_factory(tmp_path / "e2e-workspace")
    page.goto(f"{server.url}/dumps")
    wait_for_app(page)
    page.get_by_text("No dumps in this workspace yet").wait_for()
    page.get_by_label("Dump folder").fill(str(session / "torch_tensors" / "npu0_4000"))
    page.get_by_label("Run name (optional)").fill("e2e tp4 bf16")
    page.get_by_role("button", name="Ingest").click()
    page.get_by_text("All ingests finished.").wait_for(timeout=120_000)
    page.reload()
    wait_for_app(page)
    page.get_by_text("Module tree · step 0").wait_for()
    page.get_by_text("e2e tp4 bf16").first.wait_for(state="attached")
    page.get_by_text("holds a dict, not a tensor").first.wait_for(state="attached")
    body = page.inner_text("body")
    assert "Ingest errors (" in body and "verified" in body
    page.set_viewport_size({"width": 1400, "height": 2900})  # Streamlit scrolls inside the app
    page.wait_for_timeout(2500)  # let the grids and the treemap paint
    shot = tmp_path / "dumps.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    # replicated tensors are read from rank 0's files until copied into the workspace
    page.get_by_text("are read from rank 0's dump files").wait_for(state="attached")
    page.get_by_role("button", name="Copy into workspace").click()
    page.get_by_text("into the workspace.", exact=False).first.wait_for(timeout=60_000)
    text = page.inner_text("body")
    assert "Copied 0 tensors" not in text and "Copied " in text
    page.screenshot(path=str(tmp_path / "dumps_packed.png"), full_page=True)
