"""Synthetic Hugging Face-format Qwen3-MoE checkpoints with random weights from a fixed seed.

Weight names follow the hub layout (seed 001): separate q/k/v and gate/up projections, one
folder of per-expert weights per MoE layer. ``outliers=True`` makes the model look like a real
LLM inside (studio_backend/models/realism.py): massive activations on the first and delimiter tokens in
fixed channels, token-dependent hidden states and long-tailed expert routing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from studio_backend.errors import InputError
from studio_backend.models.config import Qwen3MoeConfig
from studio_backend.models.presets import PRESETS
from studio_backend.models.realism import OUTLIER_MAGNITUDE, plant
from studio_backend.models.tokenizer import load_tokenizer, write_tokenizer

__all__ = ["OUTLIER_MAGNITUDE", "create_model"]

# The tokenizer is trained on a small corpus: larger vocabularies are padded with unused ids.
TOKENIZER_VOCAB = {"tiny": 512, "tiny-d32": 512, "tiny-d32-kv2": 512, "small": 1024, "wide": 2048}
SHARD_BYTES = 2 * 1024**3


def config_dict(preset: str, layers: int | None, eos_id: int) -> dict[str, Any]:
    if preset not in PRESETS:
        raise InputError(preset, f"unknown preset (choose from {', '.join(PRESETS)})")
    p = dict(PRESETS[preset])
    if layers is not None:
        if layers < 1:
            raise InputError(layers, "--layers must be >= 1")
        p["num_hidden_layers"] = layers
    p["mlp_only_layers"] = [i for i in p["mlp_only_layers"] if i < p["num_hidden_layers"]]
    dtype = p.pop("dtype")
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        **p,
        "norm_topk_prob": True,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "router_aux_loss_coef": 0.001,
        "output_router_logits": False,
        "initializer_range": 0.02,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "torch_dtype": dtype,
    }


def random_weights(cfg: Qwen3MoeConfig, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Hub-named weights, normal(0, 0.02) (norms near 1; lm_head wider so logits are not
    flat), deterministic for ``seed``."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape: int, std: float = 0.02) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    def norm(n: int) -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(n, generator=g)).to(dtype)

    h, d = cfg.hidden_size, cfg.head_dim
    out = {"model.embed_tokens.weight": w(cfg.vocab_size, h)}
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        out[pre + "input_layernorm.weight"] = norm(h)
        out[pre + "self_attn.q_proj.weight"] = w(cfg.q_size, h)
        out[pre + "self_attn.k_proj.weight"] = w(cfg.kv_size, h)
        out[pre + "self_attn.v_proj.weight"] = w(cfg.kv_size, h)
        out[pre + "self_attn.o_proj.weight"] = w(h, cfg.q_size)
        out[pre + "self_attn.q_norm.weight"] = norm(d)
        out[pre + "self_attn.k_norm.weight"] = norm(d)
        out[pre + "post_attention_layernorm.weight"] = norm(h)
        if cfg.is_moe_layer(i):
            m = cfg.moe_intermediate_size
            out[pre + "mlp.gate.weight"] = w(cfg.num_experts, h)
            for e in range(cfg.num_experts):
                ep = f"{pre}mlp.experts.{e}."
                out[ep + "gate_proj.weight"] = w(m, h)
                out[ep + "up_proj.weight"] = w(m, h)
                out[ep + "down_proj.weight"] = w(h, m)
        else:
            n = cfg.intermediate_size
            out[pre + "mlp.gate_proj.weight"] = w(n, h)
            out[pre + "mlp.up_proj.weight"] = w(n, h)
            out[pre + "mlp.down_proj.weight"] = w(h, n)
    out["model.norm.weight"] = norm(h)
    out["lm_head.weight"] = w(cfg.vocab_size, h, std=h**-0.5)
    return out


def save_weights(out_dir: Path, weights: dict[str, torch.Tensor]) -> None:
    """model.safetensors, or shards + model.safetensors.index.json beyond SHARD_BYTES."""
    total = sum(t.numel() * t.element_size() for t in weights.values())
    if total <= SHARD_BYTES:
        save_file(weights, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in weights.items():
        n = t.numel() * t.element_size()
        if size + n > SHARD_BYTES and shards[-1]:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out_dir / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, fname))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def create_model(
    out_dir: str | Path,
    preset: str = "tiny",
    layers: int | None = None,
    seed: int = 0,
    outliers: bool = False,
) -> Path:
    """Write an HF-format Qwen3-MoE checkpoint into ``out_dir`` and return its resolved path."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise InputError(out, "directory is not empty (choose a new --out)")
    out.mkdir(parents=True, exist_ok=True)
    if preset not in PRESETS:
        raise InputError(preset, f"unknown preset (choose from {', '.join(PRESETS)})")
    eos_id = write_tokenizer(out, TOKENIZER_VOCAB[preset])
    raw = config_dict(preset, layers, eos_id)
    cfg = Qwen3MoeConfig.from_dict(raw)
    dtype = getattr(torch, raw["torch_dtype"])
    weights = random_weights(cfg, seed, dtype)
    info: dict[str, Any] = {"preset": preset, "seed": seed, "outliers": None}
    if outliers:
        tok = load_tokenizer(out)
        info["outliers"] = plant(cfg, weights, seed, tok.get_vocab())
    save_weights(out, weights)
    (out / "config.json").write_text(json.dumps(raw, indent=2), encoding="utf-8")
    gen = {"eos_token_id": eos_id, "do_sample": False, "max_new_tokens": 32}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2), encoding="utf-8")
    # Provenance for analyses and tests (which channels were planted); ignored by loaders.
    (out / "studio_model.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return out
