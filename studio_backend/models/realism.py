"""Make a random-weight checkpoint look like a real LLM from the inside (the demo model).

What real models show and how the weights reproduce it (docs/ACTIVATIONS.md, demo section):

- Massive activations (Sun et al. 2024, "Massive Activations in Large Language Models"): a
  handful of fixed residual-stream channels hold values ~1e3-1e4x the median, only at the
  starting token and at delimiter tokens ("." and newline), from the early layers on and roughly
  constant across layers. Real models create them in an early MLP from the token's position; a
  random-weight model cannot, so the demo plants them by token identity: the embedding rows of
  ``<|im_start|>`` (the first token of a chat-formatted prompt; the demo request starts with it),
  ``.`` and ``Ċ`` (newline) get +-magnitude in two fixed channels. Attention and MLP outputs are
  small next to them, so the residual carries them unchanged through every layer.
- Token-dependent activations: each embedding row is scaled by a log-normal factor (real
  embedding norms vary with token frequency), so per-token norms differ along the sequence.
- Anisotropy (Ethayarajh 2019): hidden states share a common mean direction ``u``.
- Skewed routing: each MoE router row is ``-bias_e * u + noise``; ``bias_e`` grows with
  log(rank of expert e) under a per-layer random order, so the top-k load is long-tailed
  (Zipf-like) over all experts, with different hot experts in each layer.
- Per-channel outliers in the linear inputs (LLM.int8()): every RMSNorm weight is raised on the
  massive channels.
"""

from __future__ import annotations

from typing import Any

import torch

from studio_backend.models.config import Qwen3MoeConfig

OUTLIER_MAGNITUDE = 600.0  # |x| of the first token's massive channels (> 100, ~1e4x the median)
OUTLIER_NORM_GAIN = 3.0  # RMSNorm weight on those channels: > 6 after norm (LLM.int8 threshold)
# Token -> share of OUTLIER_MAGNITUDE. Sun et al. (LLaMA2-7B): the starting token carries the
# largest values, the first "." / "\n" somewhat smaller ones.
MASSIVE_TOKENS: dict[str, float] = {"<|im_start|>": 1.0, ".": 0.6, "Ċ": 0.45}
ROW_SCALE_SIGMA = 0.5  # log-normal sigma of the embedding row scales (per-token norm CV ~0.5)
MEAN_SHARE = 1.0  # |common mean| / |per-token noise| of an embedding row (cos ~0.7)
# Router rows, in logit units (divided by sqrt(hidden): a normed hidden state has norm ~sqrt(h)).
ROUTER_LOGIT_STD = 0.5  # token-dependent part of the router logits
ROUTER_SKEW = 0.24  # bias along u per log(expert rank + 1): a long-tailed load


def plant(
    cfg: Qwen3MoeConfig, weights: dict[str, torch.Tensor], seed: int, token_ids: dict[str, int]
) -> dict[str, Any]:
    """Rewrite ``weights`` in place; return the provenance stored in studio_model.json."""
    g = torch.Generator().manual_seed(seed + 7919)
    h = cfg.hidden_size
    channels = sorted(torch.randperm(h, generator=g)[:2].tolist())
    signs = [1.0, -1.0]
    key = "model.embed_tokens.weight"
    dtype = weights[key].dtype
    emb = weights[key].float()
    # Common mean direction, kept off the massive channels so they stay clean.
    u = torch.randn(h, generator=g)
    u[channels] = 0.0
    u /= u.norm()
    noise_norm = emb.std().item() * h**0.5
    scale = torch.exp(ROW_SCALE_SIGMA * torch.randn(emb.shape[0], 1, generator=g))
    emb = scale * (emb + MEAN_SHARE * noise_norm * u)
    massive = {}
    for text, share in MASSIVE_TOKENS.items():
        tid = token_ids.get(text)
        if tid is None or tid >= emb.shape[0]:
            continue
        mag = share * OUTLIER_MAGNITUDE
        for c, s in zip(channels, signs, strict=True):
            emb[tid, c] = s * mag
        massive[str(tid)] = {"text": text, "magnitude": mag}
    weights[key] = emb.to(dtype)
    for i in range(cfg.num_hidden_layers):
        for name in ("input_layernorm", "post_attention_layernorm"):
            k = f"model.layers.{i}.{name}.weight"
            t = weights[k].float()
            t[channels] *= OUTLIER_NORM_GAIN
            weights[k] = t.to(dtype)
        k = f"model.layers.{i}.mlp.gate.weight"
        if k in weights:
            e = weights[k].shape[0]
            rank = torch.randperm(e, generator=g).float()  # this layer's hot-expert order
            bias = ROUTER_SKEW / h**0.5 * torch.log1p(rank)
            noise = ROUTER_LOGIT_STD / h**0.5 * torch.randn(e, h, generator=g)
            noise -= (noise @ u)[:, None] * u[None, :]  # the skew along u is bias_e alone
            weights[k] = (noise - bias[:, None] * u[None, :]).to(weights[k].dtype)
    return {
        "channels": channels,
        "signs": signs,
        "tokens": massive,
        "embedding_magnitude": OUTLIER_MAGNITUDE,
        "norm_gain": OUTLIER_NORM_GAIN,
        "row_scale_sigma": ROW_SCALE_SIGMA,
        "planted_in": [
            "model.embed_tokens.weight",
            "model.layers.*.input_layernorm.weight",
            "model.layers.*.post_attention_layernorm.weight",
            "model.layers.*.mlp.gate.weight",
        ],
        "reference": "Sun et al. 2024, Massive Activations in Large Language Models",
    }
