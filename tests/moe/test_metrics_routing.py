"""Metrics against hand-computed values; routing against a numpy softmax/top-k oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from studio_backend.moe import metrics, placement
from studio_backend.moe.routing import route


def test_layer_metrics_hand_computed() -> None:
    el = np.array([[4, 2, 1, 1], [2, 2, 2, 2]])
    p = placement.contiguous(2, 4, 2)
    dl = p.device_load(el)
    assert dl.tolist() == [[6, 2], [4, 4]]
    df = metrics.layer_metrics(el, dl, top_k=2)
    r0, r1 = df.iloc[0], df.iloc[1]
    assert r0.balancedness == pytest.approx(4 / 6)
    assert r0.peak_to_avg == pytest.approx(1.5)
    assert r0.max_minus_min == 4
    assert r0.cv == pytest.approx(math.sqrt(6 / 4) / 2)
    assert r0.entropy == pytest.approx(1.75 * math.log(2) / math.log(4))
    assert r0.topk_share == pytest.approx(0.75)
    assert (r1.balancedness, r1.peak_to_avg, r1.cv, r1.entropy, r1.topk_share) == pytest.approx(
        (1, 1, 0, 1, 0.5)
    )
    s = metrics.model_summary(dl)
    assert s["sglang_balancedness"] == pytest.approx(((4 + 1e-5) / (6 + 1e-5) + 1) / 2)
    assert s["vllm_balancedness"] == pytest.approx(8 / 10)
    assert s["mean_peak_to_avg"] == pytest.approx(1.25)


def test_empty_layer_is_nan_not_error() -> None:
    df = metrics.layer_metrics(np.zeros((1, 4)), np.zeros((1, 2)), top_k=2)
    assert df[["balancedness", "cv", "entropy", "topk_share"]].isna().all(axis=None)


def test_contiguous_placement_ceil() -> None:
    p = placement.contiguous(1, 10, 4)  # ceil(10/4) = 3 -> 3,3,3,1
    assert p.slot_device[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    lists = [[[2, 0], [1, 3]]]
    q = placement.from_device_lists(lists)
    assert placement.to_device_lists(q) == lists
    assert q.expert_load(np.array([[5, 6, 7, 8]]), 4).tolist() == [[6, 7, 5, 8]]


@pytest.mark.parametrize("norm", [True, False])
def test_route_matches_numpy_oracle(norm: bool) -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(64, 16)).astype(np.float32)
    r = route(torch.from_numpy(logits), top_k=4, norm_topk_prob=norm)
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ids = np.argsort(-p, axis=-1, kind="stable")[:, :4]
    w = np.take_along_axis(p, ids, -1)
    if norm:
        w = w / w.sum(-1, keepdims=True)
    assert (r.ids == ids).all()
    np.testing.assert_allclose(r.weights, w, rtol=1e-5)
    assert r.counts(16).tolist() == np.bincount(ids.ravel(), minlength=16).tolist()


@pytest.mark.parametrize("norm", [True, False])
def test_route_matches_transformers_router(norm: bool) -> None:
    """transformers 5's Qwen3-MoE router returns (logits, weights, ids): ours from its logits."""
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

    cfg = Qwen3MoeConfig(hidden_size=32, num_experts=8, num_experts_per_tok=3, norm_topk_prob=norm)
    torch.manual_seed(0)
    router = Qwen3MoeTopKRouter(cfg)
    torch.nn.init.normal_(router.weight, std=0.5)
    with torch.no_grad():
        logits, weights, ids = router(torch.randn(40, 32))
    r = route(logits, top_k=3, norm_topk_prob=norm)
    assert (r.ids == ids.numpy()).all()
    np.testing.assert_allclose(r.weights, weights.float().numpy(), rtol=1e-6)
