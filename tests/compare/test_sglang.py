"""SGLang dumps written from SGLang's public source (tests/dumps/sglang_docs_fixture.py): the
hook at TP=1 against the hook at TP=2, and against the newer dumper at TP=2 (another tool,
other names for the batch fields, the shared rotary_emb recorded differently)."""

from __future__ import annotations

import json
from pathlib import Path

from studio_backend.compare.runs import compare_runs
from studio_backend.dumps.ingest import ingest_dump
from tests.dumps import sglang_docs_fixture as F


def _ingest(ws, res: dict) -> str:
    return ingest_dump(ws, res["dump_dir"], model_config=json.loads(res["config_path"].read_text()))


def test_sglang_hook_tp2_and_dumper_tp2_against_hook_tp1(tmp_path: Path, workspace) -> None:
    h1 = _ingest(workspace, F.write_hook_dump(tmp_path / "h1", tp=1))
    h2 = _ingest(workspace, F.write_hook_dump(tmp_path / "h2", tp=2))
    d2 = _ingest(workspace, F.write_dumper_dump(tmp_path / "d2", tp=2))
    same = compare_runs(workspace, h1, h2)
    assert same.first is None and same.unaligned.empty
    assert len(same.table) > 60 and float(same.table["rel_diff"].max()) < 1e-12
    # o_proj (reduce_results=False: partial sums per rank) was summed at ingest and agrees
    assert same.table["label"].str.contains(r"self_attn\.o_proj output_0").sum() >= 2
    other = compare_runs(workspace, h1, d2)
    assert other.first is None, other.first
    labels = set(other.table["label"])
    # the hook's model.forward_batch_info.<field> is the dumper's <field>
    assert "model.forward_batch_info.input_ids output_0" in labels
    un = other.unaligned
    rot = un[un["module"].str.endswith("rotary_emb")]
    assert len(rot) and rot["reason"].str.contains("LAST layer").all()
    # what only the dumper records (non-leaf modules) is listed, not dropped
    assert set(un[un["run"] == "B"]["module"]) >= {"model.layers.0.mlp", "model.layers.1.self_attn"}
