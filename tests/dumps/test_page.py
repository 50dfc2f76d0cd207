"""The Dumps page (AppTest) shows the run, ranks, verdict counts and errors from the workspace."""

from __future__ import annotations

from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from studio_backend.dumps.ingest import ingest_dump
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT


def test_page_with_a_run(synth_dump, workspace_dir: Path) -> None:
    session, _, _ = synth_dump(4)
    bad = (
        session
        / "torch_tensors"
        / "npu3_4003"
        / "1"
        / "root.model.layers.1.mlp.gate"
        / "output.pth"
    )
    torch.save(torch.zeros(2, 9), bad)  # a shape that disagrees with the other ranks
    ws = open_workspace(workspace_dir)
    ingest_dump(ws, session, "tp4 synthetic")
    verdicts = dict(
        ws.cursor()
        .execute("SELECT verdict, count(*) FROM dump_stitch_report GROUP BY 1")
        .fetchall()
    )
    ws.close()
    at = AppTest.from_file(str(ROOT / "app_pages" / "dumps.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {
        k: f"{verdicts.get(k, 0):,}" for k in ("failed", "unknown", "assumed", "verified")
    }
    assert metrics["failed"] == "1"
    runs = at.dataframe[0].value
    assert list(runs["name"]) == ["tp4 synthetic"] and int(runs["tp_size"].iloc[0]) == 4
    assert list(at.dataframe[1].value["folder"]) == [
        "npu0_4000",
        "npu1_4001",
        "npu2_4002",
        "npu3_4003",
    ]
    errors = at.dataframe[-1].value
    assert (
        list(errors["kind"]) == ["shape_mismatch"]
        and "layers.1.mlp.gate" in errors["message"].iloc[0]
    )
    assert any("1 file(s) or tensor(s) had problems" in e.value for e in at.error)
    report = at.dataframe[2].value  # the stitch report (a Styler's data)
    report = getattr(report, "data", report)
    norms = report[report.module.str.endswith("input_layernorm") & (report.io == "output")]
    assert set(norms["token axis"]) == {"[tokens, hidden]"}
    q = report[report.module.str.endswith("q_norm")]
    assert set(q["token axis"]) == {"[tokens, heads, head_dim]"}


def test_page_failed_stitch_offers_rank_tensors_and_flags_shared(tmp_path, workspace_dir) -> None:
    """vLLM 0.32 layout with one broken replica: the page says failed, shows each rank's tensor
    (with its distance from rank 0) instead of a stitched one, and lists the shared modules."""
    import pytest

    from studio_backend.dumps import synthetic_vllm as V
    from studio_backend.dumps.synthetic import SynthConfig

    cfg = SynthConfig(layers=3, dense_layers=(0,))
    truth = V.make_truth(cfg, [4], seed=2)
    key = (0, "model.layers.1.self_attn.o_proj", "output", 0)
    session = V.write_msit(tmp_path / "v", cfg, truth, 2, tamper={key: 0.5})
    ws = open_workspace(workspace_dir)
    ingest_dump(ws, session, "vllm 0.32")
    ws.close()
    at = AppTest.from_file(str(ROOT / "app_pages" / "dumps.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["failed"] == "1"
    assert [s.value for s in at.subheader if s.value.startswith("Failed")] == [
        "Failed stitches · step 0 (1)"
    ]
    assert any("no stitched tensor was kept" in e.value for e in at.error)
    ranks = next(d.value for d in at.dataframe if "max_abs_diff_vs_first_rank" in d.value)
    assert list(ranks["rank"]) == [0, 1]
    assert ranks["max_abs_diff_vs_first_rank"].tolist() == [0.0, pytest.approx(0.5)]
    shared = next(d.value for d in at.dataframe if "evidence" in d.value)
    assert sorted(set(shared["kind"])) == ["alias", "in_place", "shared_by_layers"]
