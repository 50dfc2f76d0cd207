"""The stitcher's decisions from the data, tensor by tensor (exact expected values)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio_backend.dumps import query
from studio_backend.dumps.export import export_npy
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.dumps.stitch.rules import choose
from studio_backend.dumps.stitch.stitcher import Heads, stitch, tolerance

HEADS = Heads(num_heads=4, num_kv_heads=2, head_dim=4)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_replicas_one_float32_ulp_apart_are_verified_with_the_diff() -> None:
    """Calibration from real vLLM (REFERENCE.md 2b): replicas differ by 1.2e-7 at |x| ~ 1."""
    a = _x(5, 8).clamp(-1, 1)
    a[0, 0] = 1.0
    b = a.clone()
    b[0, 0] = 1.0 + 1.1920929e-07  # one ulp at 1.0
    res = stitch(choose("model.layers.0.self_attn.o_proj", None, "output", 0), {0: a, 1: b}, 2)
    assert (res.rule, res.verdict) == ("replicated", "verified")
    assert res.max_abs_diff == pytest.approx(1.1920929e-07) and torch.equal(res.tensor, a)
    assert "within rounding" in res.detail


@pytest.mark.parametrize("module,io,idx", [
    ("model.layers.0.self_attn.attn", "input", 1),
    ("model.layers.0.self_attn.k_norm", "output", 0),
])  # fmt: skip
def test_kv_replica_rounding_is_verified_and_deduplicated(module, io, idx) -> None:
    k0, k1 = _x(5, 4, seed=1), _x(5, 4, seed=2)  # two KV heads
    if module.endswith("k_norm"):
        k0, k1 = k0[:, None, :], k1[:, None, :]
    ulp = k0.clone()
    ulp.view(-1)[::3] = torch.from_numpy(np.nextafter(k0.reshape(-1)[::3].numpy(), np.float32(9)))
    res = stitch(choose(module, None, io, idx), {0: k0, 1: ulp, 2: k1, 3: k1.clone()}, 4, HEADS)
    assert res.verdict == "verified" and "de-duplicated" in res.detail
    assert 0 < res.max_abs_diff <= float(k0.abs().max()) * 1.2e-7
    assert torch.equal(res.tensor, torch.cat([k0, k1], dim=-1 if k0.dim() == 2 else -2))


def test_kv_replicas_that_really_differ_fail_without_a_tensor() -> None:
    k0, k1 = _x(5, 4, seed=1), _x(5, 4, seed=2)
    res = stitch(choose("model.layers.0.self_attn.attn", None, "input", 2),
                 {0: k0, 1: k0 + 1e-3, 2: k1, 3: k1}, 4, HEADS)  # fmt: skip
    assert res.verdict == "failed" and res.tensor is None
    assert res.max_abs_diff == pytest.approx(1e-3, rel=1e-3)


def test_already_reduced_experts_output_is_replicated_never_summed() -> None:
    """vLLM 0.32's MoERunner: every rank holds the full output (summing gives tp x the truth)."""
    out = _x(6, 16) * 0.05
    other = out.clone()
    other[0, 0] = float(np.nextafter(np.float32(out[0, 0]), np.float32(1)))  # <= 3e-9 apart
    choice = choose("model.layers.1.mlp.experts", None, "output", 0)
    assert choice.rule == "partial_sum"  # the name says FusedMoE; the data decide
    res = stitch(choice, {0: out, 1: other}, 2)
    assert (res.rule, res.verdict) == ("replicated", "verified")
    assert torch.equal(res.tensor, out) and 0 < res.max_abs_diff < 3e-9
    assert "already reduced" in res.detail


def test_partial_sums_where_ranks_differ() -> None:
    p0, p1 = _x(6, 16, seed=3), _x(6, 16, seed=4)
    res = stitch(choose("model.layers.1.mlp.experts", "FusedMoE", "output", 0), {0: p0, 1: p1}, 2)
    assert (res.rule, res.verdict) == ("partial_sum", "assumed")
    assert torch.equal(res.tensor, p0 + p1)


def test_moerunner_class_is_replicated() -> None:
    out = _x(3, 8)
    choice = choose("model.layers.1.mlp.experts", "MoERunner", "output", 0)
    assert choice.rule == "replicated"
    assert stitch(choice, {0: out, 1: out * 2}, 2).tensor is None  # differ: failed, no tensor
    assert choose("model.layers.1.mlp.experts.gate", None, "output", 0).module_class == "GateLinear"


def test_replicated_that_differ_beyond_rounding_fail_without_a_tensor() -> None:
    a = _x(4, 8)
    b = a.clone()
    b[1, 1] += 1e-4
    res = stitch(choose("model.layers.0.self_attn.o_proj", None, "output", 0), {0: a, 1: b}, 2)
    assert res.verdict == "failed" and res.tensor is None and res.parts == {}
    assert res.max_abs_diff == pytest.approx(1e-4, rel=1e-2)


def test_tolerance_scales_with_dtype_and_magnitude() -> None:
    assert tolerance(torch.float32, 1.0) == pytest.approx(8 * 1.1920929e-07)
    assert tolerance(torch.float32, 100.0) == pytest.approx(800 * 1.1920929e-07)
    assert tolerance(torch.bfloat16, 1.0) == pytest.approx(8 * 0.0078125)
    assert tolerance(torch.float32, 2.0, terms=4) == pytest.approx(64 * 1.1920929e-07)
    a = torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    b = torch.tensor([1.0, 2.015625], dtype=torch.bfloat16)  # one bf16 ulp at 2
    res = stitch(choose("model.layers.0.input_layernorm", None, "output", 0), {0: a, 1: b}, 2)
    assert res.verdict == "verified" and res.max_abs_diff == 0.015625


def test_failed_partial_sum_is_dropped_after_the_parent_check(synth_dump, workspace, tmp_path):
    """Older FusedMoE layout whose parent output disagrees with the sum: the summed tensor was
    stored while awaiting the parent; once the check fails it is removed (not exported)."""
    from studio_backend.dumps import synthetic as S

    cfg = S.SynthConfig()
    truth = S.make_truth(cfg, [4], seed=1)
    session = S.write_msit(tmp_path / "fused", cfg, truth, 2)
    tt = session / "torch_tensors"
    for r in (0, 1):  # the parent block's output, all-reduced: replicated but 1.0 off the sum
        f = tt / f"npu{r}_{4000 + r}" / "0" / "root.model.layers.1.mlp" / "output.pth"
        torch.save(torch.load(f, weights_only=True) + 1.0, f)
    run = ingest_dump(workspace, session)
    row = workspace.cursor().execute(
        "SELECT verdict, rule, tensor_id FROM dump_stitch_report WHERE run_id = ? AND module = "
        "'model.layers.1.mlp.experts'", [run],
    ).fetchone()  # fmt: skip
    assert row == ("failed", "partial_sum", None)
    df = query.find_tensors(workspace, run, module_regex=r"layers\.1\.mlp\.experts$")
    assert df.empty
    files = export_npy(workspace, run, tmp_path / "out")
    assert not any("mlp.experts" in str(f) for f in files)
    stored = workspace.tensors.root.rglob("*")
    assert not [f for f in stored if f.is_file() and "layers.1.mlp.experts" in str(f)]
