"""Every checkpoint layout: transformers' own save_pretrained (per-expert, fused, sharded) and
AWQ / GPTQ / FP8 written from the quantizers' documentation (tests/models/quant_fixtures.py).
The reader must return exactly the numpy dequantization of the stored ints, within the
quantization error of the original weights; the inspector must name the layout and every
missing tensor in that layout's names; the plan must count the bytes the files hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from studio_backend.cli import main
from studio_backend.errors import InputError
from studio_backend.models.checkpoint_reader import open_checkpoint
from studio_backend.models.create import create_model
from studio_backend.moe.checkpoint import inspect
from tests.models import quant_fixtures as qf

GROUP = 32  # tiny: K in {64, 32, 128}, N in {64, 32, 128}: every K a multiple, N of 8


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_model(tmp_path_factory.mktemp("layouts") / "hub", preset="tiny", seed=3)


@pytest.fixture(scope="module")
def hub_weights(hub: Path) -> dict[str, torch.Tensor]:
    return load_file(str(hub / "model.safetensors"))


@pytest.fixture(scope="module")
def saved(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hub checkpoint loaded by transformers and written back by its save_pretrained."""
    from transformers import Qwen3MoeForCausalLM

    root = tmp_path_factory.mktemp("saved")
    model = Qwen3MoeForCausalLM.from_pretrained(hub, dtype=torch.float32)
    out = {"default": root / "default", "fused": root / "fused", "sharded": root / "sharded"}
    model.save_pretrained(out["default"])
    model.save_pretrained(out["fused"], save_original_format=False)
    model.save_pretrained(out["sharded"], save_original_format=False, max_shard_size="100KB")
    return out


def test_transformers_writes_the_layouts_we_read(saved: dict[str, Path]) -> None:
    # transformers 5: experts fused in memory; save_pretrained reverts to per-expert names by
    # default and keeps them fused with save_original_format=False.
    fused = load_file(str(saved["fused"] / "model.safetensors"))
    assert fused["model.layers.1.mlp.experts.gate_up_proj"].shape == (8, 64, 64)
    assert fused["model.layers.1.mlp.experts.down_proj"].shape == (8, 64, 32)
    assert "model.layers.1.mlp.experts.0.gate_proj.weight" not in fused
    default = load_file(str(saved["default"] / "model.safetensors"))
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in default
    assert (saved["sharded"] / "model.safetensors.index.json").is_file()


@pytest.mark.parametrize(
    ("which", "experts", "files"), [("default", "per-expert", 1), ("fused", "fused", 1),
                                    ("sharded", "fused", None)]
)  # fmt: skip
def test_inspect_transformers_checkpoints(
    saved: dict[str, Path], hub: Path, which: str, experts: str, files: int | None
) -> None:
    r = inspect(saved[which], tp=2, ep=2)
    assert r["ok"], (r["missing"][:5], r["unexpected"][:5], r["wrong_shape"][:5])
    assert r["layout"]["experts"] == experts and r["layout"]["quantization"] == "none"
    if files is None:
        assert r["layout"]["files"] > 1 and r["layout"]["index"]
    else:
        assert r["layout"]["files"] == files and not r["layout"]["index"]
    ref = inspect(hub, tp=2, ep=2)
    assert r["params"] == ref["params"] and r["plan"] == ref["plan"]


@pytest.mark.parametrize("which", ["default", "fused", "sharded"])
def test_reader_gives_hub_weights_for_transformers_layouts(
    saved: dict[str, Path], hub_weights: dict[str, torch.Tensor], which: str
) -> None:
    ck = open_checkpoint(saved[which])
    for name, want in hub_weights.items():
        assert torch.equal(ck.get(name), want), name


def test_fused_missing_tensor_is_named(saved: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(saved["fused"], bad)
    w = load_file(str(bad / "model.safetensors"))
    del w["model.layers.2.mlp.experts.down_proj"]
    w["model.layers.1.mlp.experts.gate_up_proj"] = w["model.layers.1.mlp.experts.gate_up_proj"][
        :7
    ].clone()
    save_file(w, str(bad / "model.safetensors"))
    r = inspect(bad)
    assert r["missing"] == ["model.layers.2.mlp.experts.down_proj"] and r["unexpected"] == []
    assert r["wrong_shape"] == [
        {"name": "model.layers.1.mlp.experts.gate_up_proj", "expected": [8, 64, 64],
         "found": [7, 64, 64]}
    ]  # fmt: skip
    with pytest.raises(InputError, match="has no expert 7"):
        open_checkpoint(bad).get("model.layers.1.mlp.experts.7.up_proj.weight")


# --- quantized layouts ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def quant(hub: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    root = tmp_path_factory.mktemp("quant")
    return {
        "awq": (root / "awq", qf.write_awq(hub, root / "awq", GROUP)),
        "gptq": (root / "gptq", qf.write_gptq(hub, root / "gptq", GROUP, True, False)),
        "gptq_v2": (root / "gptq_v2", qf.write_gptq(hub, root / "gptq_v2", GROUP, False, True)),
        "fp8": (root / "fp8", qf.write_fp8(hub, root / "fp8", None)),
        "fp8-block": (root / "fp8b", qf.write_fp8(hub, root / "fp8b", (32, 32))),
        "fp8-tensor": (root / "fp8t", qf.write_fp8(hub, root / "fp8t", None, per_tensor=True)),
    }


def numpy_dequant(kind: str, t: dict) -> tuple[np.ndarray, np.ndarray]:
    """(dequantized [N, K], elementwise bound on |dequantized - original|), numpy only."""
    if kind.startswith("fp8"):
        w = qf.decode_e4m3fn(t["bytes"]) * t["scale"]
        # e4m3: 3 mantissa bits, half an ulp = 2**-4 relative; subnormal step 2**-9 (times s)
        return w, np.maximum(np.abs(w) * 2.0**-4, 2.0**-10 * t["scale"]) * 1.0001
    w = qf.dequant_int4(t)
    # min/max rounding: half a step; fp16 scales can push the top code over by < 1 %
    return w, 0.51 * t["s"].astype(np.float32)[t["g_idx"]].T


@pytest.mark.parametrize("kind", ["awq", "gptq", "gptq_v2", "fp8", "fp8-block", "fp8-tensor"])
def test_reader_dequantizes_exactly(
    quant: dict, hub_weights: dict[str, torch.Tensor], kind: str
) -> None:
    path, truth = quant[kind]
    ck = open_checkpoint(path)
    assert len(truth) == 7 + 2 * 28  # q/k/v/o + dense gate/up/down; q/k/v/o + 8 experts x 3
    for name, t in truth.items():
        want, bound = numpy_dequant(kind, t)
        got = ck.get(name)
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), want, err_msg=name)
        err = np.abs(got.numpy() - hub_weights[name].numpy())
        assert (err <= bound).all(), f"{name}: {float((err - bound).max())}"
    for name in ("model.layers.1.mlp.gate.weight", "lm_head.weight", "model.norm.weight"):
        assert torch.equal(ck.get(name), hub_weights[name])


def test_loader_serves_dequantized_awq(quant: dict) -> None:
    from studio_backend.engines.reference.runner import ModelRunner

    path, truth = quant["awq"]
    model = ModelRunner(path, dtype="float32").model.model
    w = {n: torch.from_numpy(qf.dequant_int4(t)) for n, t in truth.items()}
    for e in range(8):
        p = f"model.layers.2.mlp.experts.{e}."
        w13 = torch.cat([w[p + "gate_proj.weight"], w[p + "up_proj.weight"]])
        assert torch.equal(model.layers[2].mlp.experts.w13_weight[e], w13)
        assert torch.equal(model.layers[2].mlp.experts.w2_weight[e], w[p + "down_proj.weight"])
    p = "model.layers.0.self_attn."
    qkv = torch.cat([w[p + s + "_proj.weight"] for s in "qkv"])
    assert torch.equal(model.layers[0].self_attn.qkv_proj.weight, qkv)


@pytest.mark.parametrize("kind", ["awq", "gptq", "gptq_v2", "fp8", "fp8-block", "fp8-tensor"])
def test_inspect_quantized(quant: dict, hub: Path, kind: str) -> None:
    r = inspect(quant[kind][0], tp=1, ep=2)
    assert r["ok"], (r["missing"][:5], r["unexpected"][:5], r["wrong_shape"][:5])
    assert r["layout"]["experts"] == "per-expert"
    form = kind.split("_")[0].replace("-tensor", "")
    assert r["layout"]["quantization"] == form
    # quantized: 4 attention + 3 dense MLP weights in layer 0, 4 + 24 in each MoE layer; float:
    # 2 layernorms + q_norm + k_norm per layer, 2 routers, embed_tokens, norm, lm_head
    assert r["layout"]["forms"] == {form: 7 + 2 * 28, "float": 3 * 4 + 2 + 3}
    assert r["params"] == inspect(hub)["params"]  # logical parameters, not packed words


def test_plan_counts_int4_bytes(quant: dict) -> None:
    r = inspect(quant["awq"][0], tp=1, ep=2)
    # gate/up [N=32, K=64]: qweight [64, 4] i32 1024 B + qzeros [2, 4] i32 32 B + scales
    # [2, 32] f16 128 B; down [N=64, K=32]: [32, 8] 1024 B + [1, 8] 32 B + [1, 64] 128 B.
    per_expert = 3 * (1024 + 32 + 128)
    assert r["bytes"]["experts"] == 2 * 8 * per_expert
    dev = r["plan"]["per_device"]
    assert [d["by_category_bytes"]["experts"] for d in dev] == [2 * 4 * per_expert] * 2
    assert r["bytes"]["router"] == 2 * 8 * 64 * 4  # fp32, not quantized
    fp8 = inspect(quant["fp8"][0], tp=1, ep=1)
    # FP8 experts: 1 byte per weight + a [N, 1] fp32 scale
    want = 2 * 8 * (2 * (32 * 64 + 32 * 4) + (64 * 32 + 64 * 4))
    assert fp8["bytes"]["experts"] == want
    assert fp8["plan"]["per_device"][0]["by_category_bytes"]["experts"] == want


def test_quantized_missing_tensors_named_in_layout(quant: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(quant["gptq"][0], bad)
    w = load_file(str(bad / "model.safetensors"))
    del w["model.layers.1.mlp.experts.3.up_proj.scales"]
    for s in ("qweight", "qzeros", "scales", "g_idx"):
        del w[f"model.layers.2.mlp.experts.5.down_proj.{s}"]
    w["model.layers.1.self_attn.o_proj.g_idx"] = w["model.layers.1.self_attn.o_proj.g_idx"][:8]
    save_file(w, str(bad / "model.safetensors"))
    r = inspect(bad)
    assert r["missing"] == [
        "model.layers.1.mlp.experts.3.up_proj.scales",
        "model.layers.2.mlp.experts.5.down_proj.g_idx",
        "model.layers.2.mlp.experts.5.down_proj.qweight",
        "model.layers.2.mlp.experts.5.down_proj.qzeros",
        "model.layers.2.mlp.experts.5.down_proj.scales",
    ]
    assert r["unexpected"] == []
    assert r["wrong_shape"] == [
        {"name": "model.layers.1.self_attn.o_proj.g_idx", "expected": [64], "found": [8]}
    ]
    with pytest.raises(InputError, match="qweight without qzeros and scales"):
        open_checkpoint(bad).get("model.layers.1.mlp.experts.3.up_proj.weight")
    assert main(["inspect-checkpoint", str(bad), "--json"]) == 1


def test_fp8_without_scale_is_an_error(quant: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(quant["fp8"][0], bad)
    w = load_file(str(bad / "model.safetensors"))
    del w["model.layers.0.mlp.up_proj.weight_scale"]
    save_file(w, str(bad / "model.safetensors"))
    assert inspect(bad)["missing"] == ["model.layers.0.mlp.up_proj.weight_scale"]
    with pytest.raises(InputError, match="FP8 but has no weight_scale"):
        open_checkpoint(bad).get("model.layers.0.mlp.up_proj.weight")


def test_cli_prints_layout(quant: dict, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect-checkpoint", str(quant["awq"][0]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["layout"]["quantization"] == "awq" and out["layout"]["experts"] == "per-expert"
    assert main(["inspect-checkpoint", str(quant["awq"][0])]) == 0
    text = capsys.readouterr().out
    assert "layout: per-expert experts, awq" in text


def test_autogptq_quantize_config_json(quant: dict, tmp_path: Path) -> None:
    # Older AutoGPTQ checkpoints: no quantization_config in config.json, a quantize_config.json
    # beside it, no checkpoint_format (v1: qzeros hold z - 1).
    old = tmp_path / "old"
    shutil.copytree(quant["gptq"][0], old)
    cfg = json.loads((old / "config.json").read_text())
    del cfg["quantization_config"]
    (old / "config.json").write_text(json.dumps(cfg))
    (old / "quantize_config.json").write_text(
        json.dumps({"bits": 4, "group_size": GROUP, "desc_act": True, "sym": False})
    )
    path, truth = quant["gptq"]
    ck = open_checkpoint(old)
    name = "model.layers.2.mlp.experts.6.down_proj.weight"
    np.testing.assert_array_equal(ck.get(name).numpy(), qf.dequant_int4(truth[name]))
    r = inspect(old)
    assert r["ok"] and r["layout"]["quant_config"].endswith("quantize_config.json")


def test_sharded_awq_with_index(quant: dict, tmp_path: Path) -> None:
    # A module's qweight and its scales in different shards, listed by the index.
    path, truth = quant["awq"]
    sharded = tmp_path / "sharded"
    shutil.copytree(path, sharded)
    w = load_file(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(w)
    parts = {"model-00001-of-00002.safetensors": [n for n in names if not n.endswith(".scales")],
             "model-00002-of-00002.safetensors": [n for n in names if n.endswith(".scales")]}  # fmt: skip
    for fname, members in parts.items():
        save_file({n: w[n] for n in members}, str(sharded / fname), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {n: f for f, ms in parts.items() for n in ms}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    r = inspect(sharded)
    assert r["ok"] and r["layout"]["files"] == 2 and r["layout"]["index"]
    assert r["bytes"] == inspect(path)["bytes"]
    ck = open_checkpoint(sharded)
    for name, t in truth.items():
        np.testing.assert_array_equal(ck.get(name).numpy(), qf.dequant_int4(t), err_msg=name)
    # an index that names the wrong shard is a clear error
    index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="lists model.norm.weight in model-00002-of-00002"):
        inspect(sharded)
    with pytest.raises(InputError, match="cannot read model.norm.weight"):
        open_checkpoint(sharded).get("model.norm.weight")


def test_fused_fp8_experts(saved: dict[str, Path], hub_weights: dict, tmp_path: Path) -> None:
    # Block rows 24: the gate/up boundary (row 32) falls inside a block.
    truth = qf.write_fp8_fused(saved["fused"], tmp_path / "f8", (24, 32))
    r = inspect(tmp_path / "f8", tp=1, ep=2)
    assert r["ok"], (r["missing"][:5], r["unexpected"][:5], r["wrong_shape"][:5])
    assert r["layout"]["experts"] == "fused" and r["layout"]["quantization"] == "fp8-block"
    assert r["params"] == inspect(saved["fused"])["params"]
    # per layer: gate_up 8*64*64 + scales 8*3*2*4 B, down 8*64*32 + 8*3*1*4 B
    assert r["bytes"]["experts"] == 2 * (8 * 64 * 64 + 8 * 6 * 4 + 8 * 64 * 32 + 8 * 3 * 4)
    ck = open_checkpoint(tmp_path / "f8")
    for layer in (1, 2):
        p = f"model.layers.{layer}.mlp.experts."
        gu, bound_gu = numpy_dequant("fp8", truth[p + "gate_up_proj"])
        dn, bound_dn = numpy_dequant("fp8", truth[p + "down_proj"])
        for e in range(8):
            for proj, want, bound in (("gate_proj", gu[e, :32], bound_gu[e, :32]),
                                      ("up_proj", gu[e, 32:], bound_gu[e, 32:]),
                                      ("down_proj", dn[e], bound_dn[e])):  # fmt: skip
                got = ck.get(f"{p}{e}.{proj}.weight").numpy()
                np.testing.assert_array_equal(got, want)
                assert (np.abs(got - hub_weights[f"{p}{e}.{proj}.weight"].numpy()) <= bound).all()
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "f8", bad)
    w = load_file(str(bad / "model.safetensors"))
    del w["model.layers.2.mlp.experts.down_proj_scale_inv"]
    save_file(w, str(bad / "model.safetensors"))
    assert inspect(bad)["missing"] == ["model.layers.2.mlp.experts.down_proj_scale_inv"]
    with pytest.raises(InputError, match="is FP8 but has no model.layers.2.mlp.experts.down_proj_"):
        open_checkpoint(bad).get("model.layers.2.mlp.experts.0.down_proj.weight")


def test_awq_gemv_packing_is_refused(quant: dict, tmp_path: Path) -> None:
    gemv = tmp_path / "gemv"
    shutil.copytree(quant["awq"][0], gemv)
    cfg = json.loads((gemv / "config.json").read_text())
    cfg["quantization_config"]["version"] = "gemv"
    (gemv / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="AWQ 4-bit gemv packing is not read"):
        open_checkpoint(gemv).get("model.layers.1.mlp.experts.0.up_proj.weight")
