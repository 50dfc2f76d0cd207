"""Checkpoint inspector: MoE/dense layers (seed 001 rule), exact weight-name check, parameter
counts and a TP/EP partition plan with per-device shards and memory.

Reads only safetensors headers (names, shapes, dtypes): no tensor data is loaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from safetensors import safe_open

from backend.errors import InputError
from backend.models.config import Qwen3MoeConfig, read_config
from backend.paths import existing_dir

DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1,
               "F8_E4M3": 1, "F8_E5M2": 1, "BOOL": 1, "I16": 2}  # fmt: skip


def read_headers(model_dir: Path) -> dict[str, dict[str, Any]]:
    """name -> {shape, dtype, file} from the index (if any) and the safetensors headers."""
    index = model_dir / "model.safetensors.index.json"
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InputError(model_dir, "no *.safetensors files")
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as h:
                for name in h.keys():  # noqa: SIM118 - safe_open has no __iter__
                    sl = h.get_slice(name)
                    out[name] = {
                        "shape": list(sl.get_shape()),
                        "dtype": sl.get_dtype(),
                        "file": f.name,
                    }
        except Exception as exc:  # noqa: BLE001 - a broken header is bad input
            raise InputError(f, f"unreadable safetensors header ({exc})") from exc
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(index, f"not a safetensors index ({exc})") from exc
        for name, fname in weight_map.items():
            if name not in out:
                raise InputError(index, f"lists {name} in {fname}, which does not hold it")
    return out


def expected_shapes(cfg: Qwen3MoeConfig) -> dict[str, list[int]]:
    """Every Qwen3-MoE weight name (seed 001 naming) with its shape."""
    h, v = cfg.hidden_size, cfg.vocab_size
    out = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h]}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = [v, h]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        out |= {
            p + "input_layernorm.weight": [h],
            p + "post_attention_layernorm.weight": [h],
            p + "self_attn.q_proj.weight": [cfg.q_size, h],
            p + "self_attn.k_proj.weight": [cfg.kv_size, h],
            p + "self_attn.v_proj.weight": [cfg.kv_size, h],
            p + "self_attn.o_proj.weight": [h, cfg.q_size],
            p + "self_attn.q_norm.weight": [cfg.head_dim],
            p + "self_attn.k_norm.weight": [cfg.head_dim],
        }
        if cfg.is_moe_layer(i):
            m = cfg.moe_intermediate_size
            out[p + "mlp.gate.weight"] = [cfg.num_experts, h]
            for e in range(cfg.num_experts):
                q = f"{p}mlp.experts.{e}."
                out |= {q + "gate_proj.weight": [m, h], q + "up_proj.weight": [m, h],
                        q + "down_proj.weight": [h, m]}  # fmt: skip
        else:
            n = cfg.intermediate_size
            out |= {p + "mlp.gate_proj.weight": [n, h], p + "mlp.up_proj.weight": [n, h],
                    p + "mlp.down_proj.weight": [h, n]}  # fmt: skip
    return out


def category(name: str) -> str:
    if "embed_tokens" in name:
        return "embedding"
    if name.startswith("lm_head"):
        return "lm_head"
    if ".mlp.experts." in name:
        return "experts"
    if name.endswith("mlp.gate.weight"):
        return "router"
    if ".mlp." in name:
        return "dense_mlp"
    if ".self_attn." in name and not name.endswith("norm.weight"):
        return "attention"
    return "norms"


def partition_plan(cfg: Qwen3MoeConfig, tp: int, ep: int, dtype_bytes: int) -> dict[str, Any]:
    """Devices = max(tp, ep); attention/dense by TP (replicated over the DP copies), experts
    contiguous ceil(E/ep) per EP rank, each expert's intermediate dim split over devices/ep."""
    if tp < 1 or ep < 1:
        raise InputError(f"tp={tp} ep={ep}", "tp and ep must be >= 1")
    ndev = max(tp, ep)
    if ndev % tp or ndev % ep:
        raise InputError(f"tp={tp} ep={ep}", "the smaller of tp and ep must divide the larger")
    moe_tp = ndev // ep
    has_dense = any(not cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers))
    kv = cfg.num_key_value_heads
    checks = [
        (cfg.num_attention_heads % tp == 0, f"num_attention_heads={cfg.num_attention_heads}"),
        (kv % tp == 0 or tp % kv == 0, f"num_key_value_heads={kv} (nor tp a multiple of it)"),
        (
            not has_dense or cfg.intermediate_size % tp == 0,
            f"intermediate_size={cfg.intermediate_size}",
        ),
        (cfg.vocab_size % tp == 0, f"vocab_size={cfg.vocab_size}"),
    ]
    for ok, what in checks:
        if not ok:
            raise InputError(f"tp={tp}", f"{what} is not divisible by tp={tp}")
    if cfg.num_experts and cfg.moe_intermediate_size % moe_tp:
        raise InputError(
            f"tp={tp} ep={ep}",
            f"moe_intermediate_size={cfg.moe_intermediate_size} not divisible by devices/ep={moe_tp}",
        )
    h, d = cfg.hidden_size, cfg.head_dim
    q_heads = cfg.num_attention_heads // tp
    kv_heads = max(1, cfg.num_key_value_heads // tp)
    moe_layers = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]
    n_dense = cfg.num_hidden_layers - len(moe_layers)
    per_ep = math.ceil(cfg.num_experts / ep) if cfg.num_experts else 0
    m_shard = cfg.moe_intermediate_size // moe_tp if cfg.num_experts else 0
    shards = [
        {"tensor": "embed_tokens / lm_head", "split": "vocab over tp", "shard": [cfg.vocab_size // tp, h]},
        {"tensor": "qkv_proj (q,k,v)", "split": f"heads over tp ({q_heads} q, {kv_heads} kv heads"
         + (", kv replicated" if tp > cfg.num_key_value_heads else "") + ")",
         "shard": [(q_heads + 2 * kv_heads) * d, h]},
        {"tensor": "o_proj", "split": "input dim over tp", "shard": [h, q_heads * d]},
        {"tensor": "dense gate_up_proj / down_proj", "split": "intermediate over tp",
         "shard": [2 * (cfg.intermediate_size // tp), h]},
        {"tensor": "router mlp.gate", "split": "replicated", "shard": [cfg.num_experts, h]},
        {"tensor": "expert w13 / w2 (each expert)", "split": f"experts over ep ({per_ep} per EP rank), "
         f"intermediate over {moe_tp}", "shard": [2 * m_shard, h]},
        {"tensor": "norms", "split": "replicated", "shard": [h]},
    ]  # fmt: skip
    emb = cfg.vocab_size // tp * h * (1 if cfg.tie_word_embeddings else 2)
    attn = ((q_heads + 2 * kv_heads) * d * h + h * q_heads * d) * cfg.num_hidden_layers
    norms = (2 * h + 2 * d) * cfg.num_hidden_layers + h
    dense = 3 * (cfg.intermediate_size // tp) * h * n_dense
    router = cfg.num_experts * h * len(moe_layers)
    devices = []
    for dev in range(ndev):
        ep_rank = dev // moe_tp
        first = ep_rank * per_ep
        last = min(cfg.num_experts, first + per_ep)
        n_exp = max(0, last - first)
        experts = 3 * m_shard * h * n_exp * len(moe_layers)
        params = emb + attn + norms + dense + router + experts
        devices.append({
            "device": dev, "tp_rank": dev % tp, "ep_rank": ep_rank,
            "experts": [first, last - 1] if n_exp else [],
            "params": params, "bytes": params * dtype_bytes,
            "by_category_bytes": {k: v * dtype_bytes for k, v in {
                "embedding+lm_head": emb, "attention": attn, "norms": norms, "dense_mlp": dense,
                "router": router, "experts": experts}.items()},
        })  # fmt: skip
    return {"tp": tp, "ep": ep, "devices": ndev, "expert_tp": moe_tp, "shards": shards,
            "per_device": devices}  # fmt: skip


def inspect(model_dir: str | Path, tp: int = 1, ep: int = 1) -> dict[str, Any]:
    root = existing_dir(model_dir, "checkpoint directory")
    cfg = read_config(root)
    found = read_headers(root)
    expected = expected_shapes(cfg)
    missing = sorted(set(expected) - set(found), key=_natural)
    unexpected = sorted(set(found) - set(expected), key=_natural)
    wrong_shape = [
        {"name": n, "expected": expected[n], "found": found[n]["shape"]}
        for n in sorted(set(expected) & set(found), key=_natural)
        if expected[n] != found[n]["shape"]
    ]
    counts: dict[str, int] = {}
    for name, meta in found.items():
        counts[category(name)] = counts.get(category(name), 0) + math.prod(meta["shape"])
    dtypes = sorted({m["dtype"] for m in found.values()})
    dtype_bytes = max(DTYPE_BYTES.get(dt, 4) for dt in dtypes)
    moe = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]
    active_experts = cfg.num_experts_per_tok / cfg.num_experts if cfg.num_experts else 0
    return {
        "path": str(root),
        "config": {
            k: cfg.to_dict()[k]
            for k in (
                "num_hidden_layers",
                "hidden_size",
                "num_experts",
                "num_experts_per_tok",
                "moe_intermediate_size",
                "intermediate_size",
                "decoder_sparse_step",
                "mlp_only_layers",
                "norm_topk_prob",
            )
        },  # fmt: skip
        "moe_layers": moe,
        "dense_layers": [i for i in range(cfg.num_hidden_layers) if i not in moe],
        "tensors": len(found),
        "dtypes": dtypes,
        "missing": missing,
        "unexpected": unexpected,
        "wrong_shape": wrong_shape,
        "ok": not (missing or unexpected or wrong_shape),
        "params": {
            "total": sum(counts.values()),
            **dict(sorted(counts.items())),
            "active_per_token": int(
                sum(counts.values()) - counts.get("experts", 0) * (1 - active_experts)
            ),
        },  # fmt: skip
        "plan": partition_plan(cfg, tp, ep, dtype_bytes),
    }


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in name.replace(".", " . ").split()]
