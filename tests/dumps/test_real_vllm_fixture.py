"""Real vLLM 0.32 dumps (tests/dumps/fixtures/vllm032_tiny, see its README.txt): the TP=2 dump
stitches to the TP=1 truth, decided from the data (experts already reduced: kept, not summed),
the shared modules are flagged and expert load reads the router where vLLM 0.32 dumps it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from studio_backend.dumps import query
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.moe.from_dump import load_from_dump

FIX = Path(__file__).parent / "fixtures" / "vllm032_tiny"


def _whole(ws, run: str):
    df = query.find_tensors(ws, run)
    return df[df.part.isna()].set_index(["step", "module", "io", "idx"])


def test_real_tp2_stitches_to_real_tp1(workspace) -> None:
    tp1, tp2 = ingest_dump(workspace, FIX / "tp1"), ingest_dump(workspace, FIX / "tp2")
    a, b = _whole(workspace, tp1), _whole(workspace, tp2)
    assert len(a) == len(b) == 98 and set(a.index) == set(b.index)
    worst = 0.0
    for key in a.index:
        x = query.load_tensor(workspace, int(a.loc[key, "tensor_id"]))
        y = query.load_tensor(workspace, int(b.loc[key, "tensor_id"]))
        assert x.shape == y.shape and x.dtype == y.dtype, key
        diff = float((x.double() - y.double()).abs().max())
        assert diff < 1e-5, (key, diff)  # fp32, another summation order at TP=2
        worst = max(worst, diff)
    assert worst > 0  # really two runs, not one copied
    rep = query.stitch_report(workspace, tp2)
    assert set(rep.verdict) <= {"verified", "assumed"}
    experts = rep[rep.module.str.endswith("mlp.experts")]
    assert len(experts) == 2 and set(experts.rule) == {"replicated"}
    assert set(experts.verdict) == {"verified"} and (experts.max_abs_diff == 0).all()
    assert experts.detail.str.contains("already reduced").all()
    attn = rep[rep.module.str.endswith("self_attn.attn")]
    assert set(zip(attn.io, attn.idx, attn.rule, strict=True)) == {
        ("input", 0, "concat_last"), ("input", 1, "kv_cols"), ("input", 2, "kv_cols"),
        ("output", 0, "concat_last"),
    }  # fmt: skip
    act = rep[rep.module.str.endswith("mlp.act_fn")]
    assert set(zip(act.io, act.rule, strict=True)) == {
        ("input", "gate_up"),
        ("output", "concat_last"),
    }
    assert query.ingest_errors(workspace, tp2).empty


def test_real_shared_modules_flagged(workspace) -> None:
    run = ingest_dump(workspace, FIX / "tp2")
    flags = query.shared_modules(workspace, run)
    got = sorted(zip(flags.module, flags.kind, flags.evidence, strict=True))
    assert got == [
        ("model.layers.1.mlp.experts.gate", "alias", "names"),
        ("model.layers.2.mlp.experts.gate", "alias", "names"),
        ("model.layers.2.self_attn.rotary_emb", "in_place", "data"),
        ("model.layers.2.self_attn.rotary_emb", "shared_by_layers", "names"),
    ]


def test_real_expert_load_equal_at_tp1_and_tp2(workspace) -> None:
    """Router logits from mlp.experts.gate (the old error: 'holds no router logits')."""
    loads = [load_from_dump(workspace, ingest_dump(workspace, FIX / f"tp{tp}")) for tp in (1, 2)]
    for load in loads:
        assert load.meta["router_modules"] == ["mlp.experts.gate"] and load.top_k == 2
        assert load.num_experts == 8
    one, two = (ld.tokens.sort_values(["layer", "k"]) for ld in loads)
    assert one.expert.tolist() == two.expert.tolist() and len(one) == 2 * 2  # 2 MoE layers, top-2
    np.testing.assert_allclose(one.weight, two.weight, rtol=1e-5)


KV2 = Path(__file__).parent / "fixtures" / "vllm032_tiny_kv2"


def test_real_tp4_kv_replicas_apart_by_rounding_are_verified(workspace) -> None:
    """Real TP=4 with 2 KV heads: K/V replicas differ by 1..3 ulp (all-reduce rounding). They
    are verified and de-duplicated (no false alarm, the difference recorded) and the stitched
    tensors equal the real TP=1 run's."""
    tp1, tp4 = ingest_dump(workspace, KV2 / "tp1"), ingest_dump(workspace, KV2 / "tp4")
    rep = query.stitch_report(workspace, tp4)
    assert set(rep.verdict) <= {"verified", "assumed"}
    kv = rep[rep.rule.isin(["kv_cols", "kv_heads", "qkv"])]
    assert len(kv) == 2 * 5 + 2  # per layer: qkv, k_norm in/out, attn k, v; rotary k in/out
    assert (kv.verdict == "verified").all() and kv.detail.str.contains("de-duplicated").all()
    assert (kv.max_abs_diff > 0).sum() == len(kv)  # every replica pair really differs
    assert kv.max_abs_diff.max() == 5.960464477539062e-07  # 2.5 ulp at |x| 3.19 (k_norm out)
    assert kv.detail.str.contains("within rounding").all()
    a, b = _whole(workspace, tp1), _whole(workspace, tp4)
    # per layer qkv in/out, k_norm in/out, attn 3 in + out; rotary (layer 2 only) q, k in/out
    assert set(a.index) == set(b.index) and len(a) == 2 * 8 + 4
    for key in a.index:
        x = query.load_tensor(workspace, int(a.loc[key, "tensor_id"]))
        y = query.load_tensor(workspace, int(b.loc[key, "tensor_id"]))
        assert x.shape == y.shape, key
        assert float((x.double() - y.double()).abs().max()) < 1e-5, key
