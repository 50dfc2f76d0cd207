"""Counts from a dump's router logits equal a numpy recomputation from the same logits."""

from __future__ import annotations

import numpy as np

from studio_backend.dumps import synthetic
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.moe import store
from studio_backend.moe.from_dump import load_from_dump


def _numpy_counts(logits: np.ndarray, k: int) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    return np.bincount(top.ravel(), minlength=logits.shape[-1])


def test_counts_from_synthetic_msit_dump(workspace, tmp_path) -> None:
    cfg = synthetic.SynthConfig(layers=3, experts=6, dense_layers=(0,))
    truth = synthetic.make_truth(cfg, tokens=[7, 1, 1], seed=5)
    root = synthetic.write_msit(tmp_path / "dump", cfg, truth, tp=2)
    run_id = ingest_dump(workspace, root, name="synth")
    load = load_from_dump(workspace, run_id, top_k=2, norm_topk_prob=True)
    store.save(workspace, load, "from-dump")
    got = store.counts_by_step(workspace, "from-dump")
    for step in range(3):
        for layer in (1, 2):
            logits = truth[(step, f"model.layers.{layer}.mlp.gate", "output", 0)]
            want = _numpy_counts(logits, 2)
            sel = got[(got.step == step) & (got.layer == layer)].sort_values("expert")
            assert sel["count"].tolist() == want.tolist()
    assert set(got.layer) == {1, 2}  # the dense layer 0 has no router
    # per-token weights renormalised over the top-2
    tok = (
        workspace.cursor()
        .execute(
            "SELECT sum(weight) FROM moe_tokens WHERE source='from-dump' GROUP BY step, layer, token"
        )
        .fetchall()
    )
    np.testing.assert_allclose([t[0] for t in tok], 1.0, rtol=1e-6)


def test_dumped_topk_ids_are_cross_checked(workspace, tmp_path) -> None:
    """transformers layout: the router also outputs its top-k ids (output 2); they must agree."""
    import torch

    cfg = synthetic.SynthConfig(layers=2, experts=6, dense_layers=(0,))
    truth = synthetic.make_truth(cfg, tokens=[5], seed=2)
    logits = truth[(0, "model.layers.1.mlp.gate", "output", 0)]
    ids = torch.topk(torch.softmax(torch.from_numpy(logits), -1), 2, -1).indices.numpy()
    truth[(0, "model.layers.1.mlp.gate", "output", 2)] = ids.astype(np.float32)
    root = synthetic.write_msit(tmp_path / "dump", cfg, truth, tp=1)
    run_id = ingest_dump(workspace, root, name="hf-layout")
    load = load_from_dump(workspace, run_id, top_k=2)
    assert load.meta["checked_against_dumped_ids"] == 1
    import pytest

    from studio_backend.errors import StudioError

    with pytest.raises(StudioError, match="dumped top-k ids differ"):
        load_from_dump(workspace, run_id, top_k=3)


def test_counts_from_vllm032_layout_router_under_experts_gate(workspace, tmp_path) -> None:
    """Real vLLM 0.32 dumps its router (GateLinear) as mlp.experts.gate only: expert load and
    per-token routing come from there, equal to numpy's top-k of the same logits."""
    from studio_backend.dumps import synthetic_vllm
    from studio_backend.moe.from_dump import router_module

    cfg = synthetic.SynthConfig(layers=3, experts=6, dense_layers=(0,))
    truth = synthetic_vllm.make_truth(cfg, tokens=[6, 1], seed=4)
    root = synthetic_vllm.write_msit(tmp_path / "dump", cfg, truth, tp=2)
    run_id = ingest_dump(workspace, root, name="vllm032")
    load = load_from_dump(workspace, run_id, top_k=2, norm_topk_prob=False)
    assert load.meta["router_modules"] == ["mlp.experts.gate"]
    store.save(workspace, load, "v032")
    got = store.counts_by_step(workspace, "v032")
    for step in range(2):
        for layer in (1, 2):
            logits = truth[(step, f"model.layers.{layer}.mlp.experts.gate", "output", 0)]
            sel = got[(got.step == step) & (got.layer == layer)].sort_values("expert")
            assert sel["count"].tolist() == _numpy_counts(logits, 2).tolist()
    assert set(got.layer) == {1, 2}
    assert router_module(workspace, run_id, 1) == "model.layers.1.mlp.experts.gate"
