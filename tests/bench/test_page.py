"""The Kernels page (AppTest): empty workspace, stored runs, published series labelled."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from studio_backend.bench.results import save_result
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT
from tests.bench.test_results import _doc

PAGE = str(ROOT / "app_pages" / "kernels.py")


def test_empty_workspace_explains_how_to_get_data(workspace_dir) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    info = " ".join(i.value for i in at.info)
    assert "No benchmark runs" in info and "studio bench kernels" in info
    # the published seed 002 series is still shown, labelled as such
    assert any("Not measured by the studio" in c.value for c in at.caption)


def test_stored_runs_fill_the_page(workspace_dir) -> None:
    ws = open_workspace(workspace_dir)
    save_result(ws, _doc())
    serve = {
        "run": {**_doc()["run"], "run_id": "srv1", "kind": "serve", "name": "serve standin",
                "device": "remote"},
        "kernel_results": [],
        "serve_results": [{"batch": b, "requests": b, "input_tokens": 1, "output_tokens": 64 * b,
                           "wall_s": 1.0, "tokens_per_s": 64.0 * b} for b in (1, 2)],
    }  # fmt: skip
    save_result(ws, serve)
    ws.close()
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert sorted(zip(table["batch"], table["impl"], table["median_us"], strict=True)) == [
        (1, "fused-triton", 25.0), (1, "reference", 100.0),
        (2, "fused-triton", 50.0), (2, "reference", 200.0),
    ]  # fmt: skip
    assert at.dataframe[1].value["tokens_per_s"].tolist() == [64.0, 128.0]
    # the tiny preset runs from the page and its rows appear
    at.button[0].click().run()
    assert not at.exception
    assert any("stored run" in s.value for s in at.success)
