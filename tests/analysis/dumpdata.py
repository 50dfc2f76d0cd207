"""A small msit_llm-layout dump with planted outlier channels (seeded synthetic data).

Written independently of the dumps package (layout per REFERENCE.md section 1) and ingested
through its public ``ingest_dump``; the arrays kept here are the oracle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTER, LAYERS = 64, 4, 2, 8, 48, 3
CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "model_type": "qwen3_moe",
    "hidden_size": HIDDEN,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,
    "head_dim": HEAD_DIM,
    "intermediate_size": INTER,
    "moe_intermediate_size": INTER,
    "num_experts": 0,
    "num_hidden_layers": LAYERS,
    "mlp_only_layers": list(range(LAYERS)),
    "decoder_sparse_step": 1,
}
OUTLIER_CHANNELS = (11, 42)  # planted in every layer's hidden states
MASSIVE = (0, 42, 2500.0)  # token 0, channel 42: a massive activation


def _hidden(rng: np.random.Generator, tokens: int, scale: float) -> np.ndarray:
    x = rng.standard_normal((tokens, HIDDEN)).astype(np.float32)
    x[:, OUTLIER_CHANNELS[0]] *= 30.0 * scale
    x[:, OUTLIER_CHANNELS[1]] *= -20.0 * scale
    x[MASSIVE[0], MASSIVE[1]] = MASSIVE[2] * scale
    return x


def write_dump(root: Path, *, tokens: int = 24, seed: int = 0, scale: float = 1.0,
               kronecker: bool = True) -> tuple[Path, dict]:  # fmt: skip
    """Write the dump; returns its session dir and ``{(module, io, idx): array}`` of step 0."""
    rng = np.random.default_rng(seed)
    session = root / "msit_dump_20261123_010000"
    rank = session / "torch_tensors" / "npu0_1000"
    truth: dict[tuple[str, str, int], np.ndarray] = {}
    ids = rng.integers(0, 100, size=tokens).astype(np.int64)
    truth[("model.embed_tokens", "input", 0)] = ids
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        h = _hidden(rng, tokens, scale * (1 + layer))
        truth[(f"{p}.input_layernorm", "input", 0)] = h
        normed = rng.standard_normal((tokens, HIDDEN)).astype(np.float32)
        truth[(f"{p}.input_layernorm", "output", 0)] = normed
        q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
        truth[(f"{p}.self_attn.qkv_proj", "output", 0)] = rng.standard_normal(
            (tokens, q + 2 * kv)
        ).astype(np.float32)
        truth[(f"{p}.self_attn.o_proj", "output", 0)] = h * 0.5
        truth[(f"{p}.mlp.gate_up_proj", "output", 0)] = rng.standard_normal(
            (tokens, 2 * INTER)
        ).astype(np.float32)
        truth[(f"{p}.mlp.down_proj", "output", 0)] = h * 0.25
    if kronecker:
        # FlatQuant-style Hadamard transforms on a [tokens, 8*8] activation with an outlier.
        act = rng.standard_normal((tokens, 64)).astype(np.float32)
        act[:, 5] *= 50.0
        h8 = np.array([[1.0]])
        while h8.shape[0] < 8:
            h8 = np.block([[h8, h8], [h8, -h8]])
        h8 = (h8 / np.sqrt(8)).astype(np.float32)
        api = "model.layers.0.mlp.down_proj.npu_kronecker_quant"
        truth[(api, "input", 0)] = act
        truth[(api, "input", 1)] = h8
        truth[(api, "input", 2)] = h8
    for (module, io, idx), arr in truth.items():
        d = rank / "0" / f"root.{module}"
        d.mkdir(parents=True, exist_ok=True)
        name = "output.pth" if io == "output" else f"input_{idx}.pth"
        t = torch.from_numpy(np.ascontiguousarray(arr))
        torch.save(t if t.dtype == torch.int64 else t.to(torch.bfloat16), d / name)
    (session / "config.json").write_text(json.dumps(CONFIG))
    bf = {k: (v if v.dtype == np.int64 else torch.from_numpy(v).to(torch.bfloat16).float().numpy())
          for k, v in truth.items()}  # fmt: skip
    return session, bf
