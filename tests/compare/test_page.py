"""The Compare page (AppTest) names the planted fault as the first divergence and draws it."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from studio_backend.dumps import synthetic as S
from studio_ui.navigation import ROOT

PAGE = str(ROOT / "app_pages/compare.py")
FAULT = (0, "model.layers.1.mlp.down_proj", "output", 0)


def make_pair(tmp_path: Path, ws) -> tuple[str, str]:
    """TP=1 reference and a TP=2 copy with one module's output perturbed."""
    from studio_backend.dumps.ingest import ingest_dump

    cfg = S.SynthConfig(layers=3, dense_layers=(0, 1, 2))
    truth = S.make_truth(cfg, [6], seed=4)
    bad = copy.deepcopy(truth)
    bad[FAULT] = bad[FAULT] * np.float32(1.01)
    bad[FAULT][3] += 1.0
    a = ingest_dump(ws, S.write_msit(tmp_path / "ref", cfg, truth, 1), name="reference tp1")
    b = ingest_dump(ws, S.write_msit(tmp_path / "bad", cfg, bad, 2), name="faulty tp2")
    return a, b


@pytest.fixture
def pair(workspace_dir: Path, tmp_path: Path) -> tuple[str, str]:
    from studio_backend.workspace import open_workspace

    ws = open_workspace(workspace_dir)
    try:
        return make_pair(tmp_path, ws)
    finally:
        ws.close()


def test_page_names_the_first_divergence(pair) -> None:
    a, b = pair
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(a=a, b=b)
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "First divergence" in errors[0]
    assert "model.layers.1.mlp.down_proj output_0" in errors[0] and "first at token 0" in errors[0]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Diverged"] == "1" and metrics["Not aligned"] == "0"
    # the 3D view opens on the diverging tensor
    assert at.selectbox(key="cmp_t_model.layers.1.mlp.down_proj output_0").value.startswith(
        "model.layers.1.mlp.down_proj"
    )
    ranked = at.dataframe[0].value
    assert ranked["module"].iloc[0] == FAULT[1]
    # swapped, with a loose threshold: no divergence
    at.number_input(key="cmp_thr").set_value(0.5).run()
    assert not at.exception, at.exception
    assert any("No divergence" in s.value for s in at.success)


def test_page_without_two_runs_says_how(workspace_dir: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("two ingested runs" in i.value for i in at.info)
