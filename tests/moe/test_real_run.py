"""A real multi-rank reference-engine run (tp=2, msit dump): counts per (step, layer, expert)
routed by the studio equal a numpy recomputation from the router logits, and those logits equal
the gate input times the checkpoint's router weight."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio_backend.dumps import query
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.models.config import read_config
from studio_backend.models.create import create_model
from studio_backend.moe import store
from studio_backend.moe.from_dump import load_from_dump

pytest.importorskip("msit_llm")
pytestmark = pytest.mark.slow


def _numpy_counts(logits: np.ndarray, k: int, e: int) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.bincount(np.argsort(-p, axis=-1, kind="stable")[:, :k].ravel(), minlength=e)


def test_counts_from_real_tp2_run(workspace, tmp_path) -> None:
    from studio_backend.engines.reference.dumping import DumpOptions
    from studio_backend.engines.reference.offline import run_offline

    model = create_model(tmp_path / "tiny", preset="tiny", seed=3)
    cfg = read_config(model)
    res = run_offline(
        model,
        tp=2,
        prompts=[[11, 57, 203, 9, 100], [3, 480, 4]],
        max_tokens=3,
        dump=DumpOptions(tool="msit", dump_path=tmp_path / "dump", token_range=[0, 1, 2]),
    )
    run_id = ingest_dump(workspace, res.dump_root, name="tiny-tp2")
    load = load_from_dump(workspace, run_id)
    assert load.top_k == cfg.num_experts_per_tok and load.num_devices == 2
    store.save(workspace, load, "real")
    got = store.counts_by_step(workspace, "real")
    weights = load_file(str(model / "model.safetensors"))
    # the engine's current-vLLM layout dumps its router (GateLinear) as mlp.experts.gate
    gates = query.find_tensors(workspace, run_id, module_regex=r"mlp\.experts\.gate$")
    assert load.meta["router_modules"] == ["mlp.experts.gate"]
    checked = 0
    for layer in cfg.moe_layers:
        w = weights[f"model.layers.{layer}.mlp.gate.weight"].double().numpy()
        for step in range(3):
            sel = gates[(gates.step == step) & (gates.layer == layer)]
            out = sel[(sel.io == "output") & (sel.idx == 0)]
            inp = sel[(sel.io == "input") & (sel.idx == 0)]
            logits = query.load_tensor(workspace, int(out.tensor_id.iloc[0])).float().numpy()
            x = query.load_tensor(workspace, int(inp.tensor_id.iloc[0])).double().numpy()
            np.testing.assert_allclose(logits, x @ w.T, rtol=1e-4, atol=1e-5)
            want = _numpy_counts(logits, cfg.num_experts_per_tok, cfg.num_experts)
            have = got[(got.step == step) & (got.layer == layer)].sort_values("expert")["count"]
            assert have.tolist() == want.tolist()
            assert want.sum() == logits.shape[0] * cfg.num_experts_per_tok
            checked += 1
    assert checked == len(cfg.moe_layers) * 3
    assert torch.is_tensor(res.step_logits[0])
