"""Regenerate tests/models/data/ct_checkpoints/* and ct_expected/*: checkpoints written by
compressed-tensors itself (the library llm-compressor saves with) from a tiny Qwen3-MoE made by
transformers.

Run with compressed-tensors installed (it is not a project dependency; pure Python):
    python tests/models/data/make_compressed_tensors.py

Each checkpoint folder holds config.json (transformers' + compressed-tensors'
``quantization_config``) and model.safetensors as ``ModelCompressor.compress_model`` +
``save_pretrained`` wrote it; ct_expected/NAME.safetensors holds compressed-tensors' own
``decompress_model`` result (fp32) for every quantized Linear, the oracle the reader must equal.
Only nn.Linear modules are quantized (attention, dense MLP): transformers 5 keeps MoE experts in
a fused module (saved per expert, float). Folder names avoid ``compressed_tensors`` so nothing
here can shadow the package.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config
from compressed_tensors.quantization.utils.helpers import calculate_qparams
from safetensors.torch import save_file
from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

OUT = Path(__file__).parent / "ct_checkpoints"
EXPECTED = Path(__file__).parent / "ct_expected"  # not inside the checkpoints
CONFIG = dict(vocab_size=32, hidden_size=32, intermediate_size=32, num_hidden_layers=2,
              num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_experts=4,
              num_experts_per_tok=2, moe_intermediate_size=16, mlp_only_layers=[0],
              decoder_sparse_step=1, norm_topk_prob=True)  # fmt: skip
SCHEMES = {
    "fp8-channel": ({"num_bits": 8, "type": "float", "strategy": "channel"}, "float-quantized"),
    "fp8-tensor": ({"num_bits": 8, "type": "float", "strategy": "tensor"}, "float-quantized"),
    "fp8-block": (
        {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [16, 16]},
        "float-quantized",
    ),  # fmt: skip
    "w4a16-sym": (
        {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 16},
        "pack-quantized",
    ),  # fmt: skip
    "w4a16-asym": (
        {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 16, "symmetric": False},
        "pack-quantized",
    ),  # fmt: skip
}


def observe(w: torch.Tensor, args) -> tuple[torch.Tensor, torch.Tensor]:
    """min/max per the strategy (what llm-compressor's MinMax observer computes)."""
    n, k = w.shape
    if args.strategy == "tensor":
        return w.min().reshape(1), w.max().reshape(1)
    if args.strategy == "channel":
        return w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    if args.strategy == "group":
        r = w.reshape(n, k // args.group_size, args.group_size)
        return r.amin(-1), r.amax(-1)
    bn, bk = args.block_structure
    r = w.reshape(n // bn, bn, k // bk, bk)
    return r.amin((1, 3)), r.amax((1, 3))


def write(name: str, weights: dict, fmt: str) -> None:
    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**CONFIG)).eval()
    args = {"symmetric": True, "dynamic": False} | weights
    qc = {"config_groups": {"group_0": {"targets": ["Linear"], "weights": args}},
          "ignore": ["lm_head"], "format": fmt}  # fmt: skip
    apply_quantization_config(model, QuantizationConfig.model_validate(qc))
    quantized = []
    for mod_name, m in model.named_modules():
        if getattr(m, "quantization_scheme", None) is None:
            continue
        a = m.quantization_scheme.weights
        scale, zp = calculate_qparams(*observe(m.weight.data, a), a)
        m.weight_scale.data = scale.to(m.weight_scale.dtype).reshape(m.weight_scale.shape)
        if hasattr(m, "weight_zero_point"):
            m.weight_zero_point.data = zp.to(m.weight_zero_point.dtype).reshape(
                m.weight_zero_point.shape
            )
        quantized.append(mod_name)
    comp = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    comp.compress_model(model)
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    comp.update_config(out)
    comp.decompress_model(model)
    mods = dict(model.named_modules())
    expected = {f"{n}.weight": mods[n].weight.data.float().contiguous() for n in quantized}
    EXPECTED.mkdir(exist_ok=True)
    save_file(expected, str(EXPECTED / f"{name}.safetensors"))
    cfg = json.loads((out / "config.json").read_text())
    print(name, len(quantized), "quantized;", cfg["quantization_config"]["format"])


if __name__ == "__main__":
    for name, (weights, fmt) in SCHEMES.items():
        write(name, weights, fmt)
