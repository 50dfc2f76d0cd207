"""Triton gating (softmax + top-k + renormalise) against torch, in the interpreter."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize(
    ("rows", "experts", "topk", "renorm"), [(5, 16, 4, True), (3, 60, 8, False)]
)
def test_topk_softmax_matches_torch(rows, experts, topk, renorm) -> None:
    pytest.importorskip("triton")
    from studio_kernels.gating import topk_softmax, topk_softmax_torch

    logits = torch.randn((rows, experts), generator=torch.Generator().manual_seed(rows))
    ids, w = topk_softmax(logits, topk, renorm)
    ref_ids, ref_w = topk_softmax_torch(logits, topk, renorm)
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(w, ref_w, rtol=1e-5, atol=1e-7)
    if renorm:
        assert torch.allclose(w.sum(1), torch.ones(rows))
