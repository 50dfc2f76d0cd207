"""Model variants for comparison tests: the same tiny checkpoint in bf16, and with its MoE
experts' weights W4A16-quantized (AWQ int4, group 32, kernels/studio_kernels/awq.py) and
dequantized back, as a W4A16 kernel computes with them (int4 weights, bf16 activations)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

EXPERT = re.compile(r"\.mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight$")
GROUP = 32


def awq_roundtrip(weight: torch.Tensor, group: int = GROUP) -> torch.Tensor:
    """``weight`` [out, in] through AWQ int4 (K = in features) and back, in its dtype."""
    from studio_kernels.awq import dequantize_awq, quantize_awq

    w = weight.float().t().contiguous()  # AWQ's W[K, N]
    q, z, s = quantize_awq(w, group)
    return dequantize_awq(q, z, s, group, torch.float32).t().contiguous().to(weight.dtype)


def variant(src: Path, dst: Path, *, dtype: str = "bfloat16", w4a16_experts: bool = False) -> Path:
    """A copy of the checkpoint at ``src`` served in ``dtype``; experts W4A16 if asked."""
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["dtype"] = dtype
    cfg.pop("torch_dtype", None)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    weights = load_file(str(src / "model.safetensors"))
    dt = getattr(torch, dtype)
    out = {}
    for name, t in weights.items():
        t = t.to(dt)
        if w4a16_experts and EXPERT.search(name):
            t = awq_roundtrip(t)
        out[name] = t.contiguous()
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst
