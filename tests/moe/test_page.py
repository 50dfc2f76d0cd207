"""The Experts page (AppTest): empty workspace help, and real numbers for a stored source."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from studio_backend.moe import store
from studio_backend.moe.detect import read_source
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT
from tests.moe import fixtures


def test_empty_workspace_shows_how_to(workspace_dir) -> None:
    at = AppTest.from_file(str(ROOT / "app_pages/experts.py"), default_timeout=60).run()
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
    at = AppTest.from_file(str(ROOT / "app_pages/experts.py"), default_timeout=60)
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
    at = AppTest.from_file(str(ROOT / "app_pages/experts.py"), default_timeout=60).run()
    at.text_input[0].set_value(bad)
    at.button[0].click().run()
    assert not at.exception
    assert any("Importing expert load" in e.value for e in at.error)


def test_checkpoint_section(workspace_dir, tmp_path) -> None:
    from studio_backend.models.create import create_model

    model = create_model(tmp_path / "tiny", preset="tiny", seed=2)
    at = AppTest.from_file(str(ROOT / "app_pages/experts.py"), default_timeout=60).run()
    at.text_input[-1].set_value(str(model))
    at.number_input[-2].set_value(2)
    at.number_input[-1].set_value(2)
    at.button[-1].click().run()
    assert not at.exception and not at.error
    assert any(
        "Every Qwen3-MoE weight name and shape is as expected" in s.value for s in at.success
    )
    assert any(
        "**Layout** per-expert experts · none weights · 1 file(s)" in m.value for m in at.markdown
    )
    per_device = at.dataframe[-1].value
    assert per_device["experts"].tolist() == ["0-3", "4-7"]


def test_route_dump_run_from_page(workspace_dir, tmp_path) -> None:
    from studio_backend.dumps import synthetic
    from studio_backend.dumps.ingest import ingest_dump

    cfg = synthetic.SynthConfig(layers=2, experts=4, dense_layers=(0,))
    root = synthetic.write_msit(
        tmp_path / "d", cfg, synthetic.make_truth(cfg, [3, 1], seed=1), tp=2
    )
    ws = open_workspace(workspace_dir)
    run_id = ingest_dump(ws, root, name="synth")
    ws.close()
    at = AppTest.from_file(str(ROOT / "app_pages/experts.py"), default_timeout=60).run()
    form_k = [n for n in at.number_input if n.label.startswith("Top-k")][0]
    form_k.set_value(2)
    [b for b in at.button if b.label.startswith("Route router logits")][0].click().run()
    assert not at.exception and not at.error
    assert any(f"dump-{run_id}" in s.value for s in at.success)
    # the dump source has per-token routing: the tokens of expert 0 in layer 1 link to Activations
    at.run()
    links = [m.value for m in at.markdown if "/activations?" in m.value]
    assert links and f"run={run_id}" in links[0] and "model.layers.1.mlp.gate" in links[0]


def test_expert_with_no_tokens_is_not_called_a_source_without_routing(workspace_dir) -> None:
    import pandas as pd

    from studio_backend.moe import store
    from studio_backend.moe.records import COLUMNS, LoadSet

    counts = pd.DataFrame(
        [[0, -1, 0, e, 0, e, n] for e, n in enumerate([2, 1, 0])], columns=COLUMNS
    )
    tokens = pd.DataFrame(
        {"step": [0, 0, 0], "token": [0, 0, 1], "layer": [0, 0, 0], "k": [0, 1, 0],
         "expert": [0, 1, 0], "weight": [0.6, 0.4, 1.0], "input_id": [5, 5, 9],
         "position": [0, 0, 1]}
    )  # fmt: skip
    ws = open_workspace(workspace_dir)
    store.save(ws, LoadSet("dump", "x", counts, 3, 1, top_k=2, tokens=tokens), "routed")
    assert store.has_tokens(ws, "routed")
    assert store.tokens_for_expert(ws, "routed", 0, 2).empty
    ws.close()
    at = AppTest.from_file(str(ROOT / "app_pages/experts.py"), default_timeout=60).run()
    [n for n in at.number_input if n.label == "Expert"][0].set_value(2).run()
    assert not at.exception
    info = " ".join(i.value for i in at.info)
    assert "Expert 2 received no tokens in layer 0" in info and "no per-token" not in info
