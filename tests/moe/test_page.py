"""The Experts page (AppTest): empty workspace help, and real numbers for a stored source."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from backend.moe import store
from backend.moe.detect import read_source
from backend.workspace import open_workspace
from studio.navigation import ROOT
from tests.moe import fixtures


def test_empty_workspace_shows_how_to(workspace_dir) -> None:
    at = AppTest.from_file(str(ROOT / "pages/experts.py"), default_timeout=60).run()
    assert not at.exception
    assert any("No expert load in this workspace yet" in i.value for i in at.info)


def test_source_metrics_and_compare(workspace_dir, tmp_path) -> None:
    fixtures.sglang_stat(tmp_path / "a.pt")
    fixtures.mindie_folder(tmp_path / "hot")
    ws = open_workspace(workspace_dir)
    (a,) = read_source(tmp_path / "a.pt", num_devices=2)
    store.save(ws, a, "before")
    (m,) = read_source(tmp_path / "hot")
    store.save(ws, m, "after")
    summary = store.aggregate(ws, "before").summary
    ws.close()
    at = AppTest.from_file(str(ROOT / "pages/experts.py"), default_timeout=60)
    at.query_params["source"] = "before"
    at.run()
    assert not at.exception and not at.error
    shown = {mt.label: mt.value for mt in at.metric}
    assert shown["sglang balancedness"] == f"{summary['sglang_balancedness']:.4f}"
    assert shown["vllm balancedness"] == f"{summary['vllm_balancedness']:.4f}"
    assert at.metric[0].help.startswith("SGLang")
    at.selectbox[1].set_value("after").run()
    assert not at.exception and not at.error
    assert [s.value for s in at.subheader][:2] == ["before", "after"]


@pytest.mark.parametrize("bad", ["", "/nonexistent/rec.pt"])
def test_import_form_errors_are_messages(workspace_dir, bad) -> None:
    at = AppTest.from_file(str(ROOT / "pages/experts.py"), default_timeout=60).run()
    at.text_input[0].set_value(bad)
    at.button[0].click().run()
    assert not at.exception
    assert any("Importing expert load" in e.value for e in at.error)
