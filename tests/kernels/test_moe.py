"""MoE layer paths against the fp64 numpy oracle at reduced shapes (Triton in the interpreter)."""

from __future__ import annotations

import pytest
import torch

from studio_kernels.experts import fuse_experts, random_experts
from studio_kernels.oracle import moe_oracle, relative_error
from studio_kernels.reference import moe_reference, moe_tiled_torch
from studio_kernels.routing import make_routing

H, INTER, E, K, G = 256, 128, 16, 4, 64
# Normwise relative error gates per activation dtype: bf16 keeps 8 mantissa bits (the
# interpreter also truncates fp32 -> bf16), fp16 11.
GATES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.2e-2}


@pytest.fixture(scope="module")
def experts():
    return random_experts(E, H, INTER, G, seed=11)


@pytest.fixture(scope="module")
def fused(experts):
    return fuse_experts(experts)


def _inputs(batch: int, routing: str, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn((batch, H), generator=gen).to(dtype)
    ids, w = make_routing(batch, K, E, routing, seed=seed)
    return x, ids, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("batch", "routing"), [(1, "uniform"), (3, "skewed"), (4, "disjoint")])
def test_fused_triton_matches_oracle(experts, fused, dtype, batch, routing) -> None:
    pytest.importorskip("triton")
    from studio_kernels.triton_moe import moe_fused_triton

    x, ids, w = _inputs(batch, routing, dtype)
    oracle = moe_oracle(x, ids, w, experts)
    y = moe_fused_triton(x, ids, w, fused)
    assert y.dtype == dtype and y.shape == (batch, H)
    assert relative_error(y, oracle) < GATES[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_paths_match_oracle(experts, fused, dtype) -> None:
    x, ids, w = _inputs(8, "uniform", dtype, seed=5)
    oracle = moe_oracle(x, ids, w, experts)
    assert relative_error(moe_reference(x, ids, w, experts), oracle) < GATES[dtype] * 2
    assert relative_error(moe_tiled_torch(x, ids, w, fused, block_k=64), oracle) < GATES[dtype]


def test_oracle_is_sensitive_to_routing(experts) -> None:
    # A gate that a wrong expert choice or a dropped routing weight would fail.
    x, ids, w = _inputs(2, "uniform", torch.float32)
    base = moe_oracle(x, ids, w, experts)
    swapped = ids.clone()
    swapped[0, 0] = (
        (ids[0, 0] + 1) % E if (ids[0, 0] + 1) % E not in ids[0] else (ids[0, 0] + 2) % E
    )
    assert relative_error(moe_oracle(x, swapped, w, experts), base) > 0.05
    assert relative_error(moe_oracle(x, ids, w * 0.5, experts), base) == pytest.approx(0.5)


def test_align_routing_lists_every_pair_once() -> None:
    pytest.importorskip("triton")
    from studio_kernels.triton_moe import align_routing

    ids, _ = make_routing(6, K, E, "skewed", seed=3)
    pairs, experts_of = align_routing(ids, E, 16)
    used = experts_of[experts_of >= 0].tolist()
    assert sorted(used) == sorted(set(ids.flatten().tolist()))
    seen = []
    for slot, e in enumerate(experts_of.tolist()):
        block = pairs[slot * 16 : (slot + 1) * 16].tolist()
        real = [p for p in block if p < ids.numel()]
        if e < 0:
            assert real == []
        for p in real:
            assert int(ids.flatten()[p]) == e
        seen += real
    assert sorted(seen) == list(range(ids.numel()))


def test_routing_modes() -> None:
    from studio_kernels.routing import expected_touched_uniform

    ids, w = make_routing(4, K, E, "disjoint")
    assert len(set(ids.flatten().tolist())) == 16
    assert torch.allclose(w.sum(1), torch.ones(4))
    for mode in ("uniform", "skewed"):
        ids, _ = make_routing(32, K, E, mode, seed=1)
        assert all(len(set(r)) == K for r in ids.tolist())
    assert expected_touched_uniform(1, 8, 128) == pytest.approx(8.0)


def test_fused_refuses_duplicate_experts(fused) -> None:
    pytest.importorskip("triton")
    from studio_kernels.triton_moe import moe_fused_triton

    x = torch.zeros((2, H))
    ids = torch.tensor([[1, 2, 3, 4], [5, 5, 6, 7]], dtype=torch.int32)
    with pytest.raises(ValueError, match="same expert twice"):
        moe_fused_triton(x, ids, torch.full((2, K), 0.25), fused)


def test_harness_gpu_impls_are_wired(experts, fused) -> None:
    # The harness's CUDA path list, run here in the interpreter on CPU tensors (not timed).
    pytest.importorskip("triton")
    from studio_backend.bench.harness import impls_for

    impls = impls_for("cuda", experts, fused)
    assert [i.name for i in impls] == ["reference", "fused-triton"]
    assert [i.graphable for i in impls] == [False, True]
    x, ids, w = _inputs(2, "uniform", torch.bfloat16, seed=9)
    oracle = moe_oracle(x, ids, w, experts)
    for impl in impls:
        assert relative_error(impl.fn(x, ids, w), oracle) < GATES[torch.bfloat16]


def test_fused_narrow_tiles_match_oracle(experts, fused) -> None:
    # The GPU picks 16/32-wide output tiles for small grids: same result as 64.
    pytest.importorskip("triton")
    from studio_kernels.triton_moe import moe_fused_triton, pick_block_n

    assert pick_block_n(8, 768) == 16 and pick_block_n(64, 7168) == 64
    x, ids, w = _inputs(3, "uniform", torch.float32, seed=4)
    oracle = moe_oracle(x, ids, w, experts)
    for bn in (16, 32):
        assert relative_error(moe_fused_triton(x, ids, w, fused, block_n=bn), oracle) < 1e-5
