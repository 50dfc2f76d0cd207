"""msprobe dumps (finished and crashed) stitch to the same truth; any inner folder works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from studio_backend.dumps import query
from studio_backend.dumps import synthetic as S
from studio_backend.dumps.detect import detect
from studio_backend.dumps.formats.msprobe import parse_name
from studio_backend.dumps.ingest import ingest_dump


def test_parse_name() -> None:
    assert parse_name("Module.model.layers.0.self_attn.qkv_proj.QKVParallelLinear.forward.0.output.0.pt") == (
        "model.layers.0.self_attn.qkv_proj", "QKVParallelLinear", 0, "output", 0, None,
    )  # fmt: skip
    assert parse_name("Module.model.layers.1.mlp.experts.FusedMoE.forward.2.kwargs.hidden_states.pt") == (
        "model.layers.1.mlp.experts", "FusedMoE", 2, "input", -1, "hidden_states",
    )  # fmt: skip
    assert (
        parse_name("Module.model.layers.0.mlp.Qwen3MoeMLP.forward.0.parameters.weight.pt") is None
    )


@pytest.mark.parametrize("crashed", [False, True])
def test_msprobe_tp4_equals_truth(crashed: bool, tmp_path: Path, workspace) -> None:
    cfg = S.SynthConfig()
    truth = S.make_truth(cfg, [4, 1], seed=5)
    root = S.write_msprobe(tmp_path / "probe", cfg, truth, 4, crashed=crashed)
    layout = detect(root / "step1" / "rank2" / "dump_tensor_data")
    assert (layout.format, layout.root, layout.tp_size) == ("msprobe", root, 4)
    run = ingest_dump(workspace, root / "step0")
    df = query.find_tensors(workspace, run)
    whole = df[df.part.isna()]
    n = 0
    for (step, module, io, idx), arr in truth.items():
        row = whole[
            (whole.step == step) & (whole.module == module) & (whole.io == io) & (whole.idx == idx)
        ]
        np.testing.assert_array_equal(
            query.load_tensor(workspace, int(row.tensor_id.iloc[0])).numpy(), arr
        )
        n += 1
    assert n == len(whole)
    classes = set(df.module_class)
    assert {"QKVParallelLinear", "FusedMoE", "RowParallelLinear"} <= classes
    tool_rows = (
        workspace.cursor()
        .execute("SELECT count(*) FROM dump_tool_stats WHERE run_id = ?", [run])
        .fetchone()[0]
    )
    # dump.json statistics (written at stop()) are kept as the tool's own numbers
    assert tool_rows == (0 if crashed else len(query.find_tensors(workspace, run, stitched=False)))
