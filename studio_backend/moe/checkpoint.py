"""Checkpoint inspector: MoE/dense layers (seed 001 rule), the layout found (per-expert or fused
experts; float, AWQ, GPTQ or FP8 weights), exact weight-name check for that layout, parameter
counts and a TP/EP partition plan with per-device shards and the bytes they really take.

Reads only safetensors headers (names, shapes, dtypes): no tensor data is loaded.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from safetensors import safe_open

from studio_backend.errors import InputError
from studio_backend.models.checkpoint_layouts import (
    logical_name,
    match_layout,
    read_quant_config,
    stored_params,
)
from studio_backend.models.config import Qwen3MoeConfig, read_config
from studio_backend.paths import existing_dir

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
                        "indexed": False,
                    }
        except Exception as exc:  # noqa: BLE001 - a broken header is bad input
            raise InputError(f, f"unreadable safetensors header ({exc})") from exc
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(index, f"not a safetensors index ({exc})") from exc
        for name, fname in weight_map.items():
            if name not in out or out[name]["file"] != fname:
                raise InputError(index, f"lists {name} in {fname}, which does not hold it")
            out[name]["indexed"] = True
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


PLAN_CATEGORIES = ("embedding+lm_head", "attention", "norms", "dense_mlp", "router", "experts")


def partition_plan(
    cfg: Qwen3MoeConfig, tp: int, ep: int, dtype_bytes: float | dict[str, float]
) -> dict[str, Any]:
    """Devices = max(tp, ep); attention/dense by TP (replicated over the DP copies), experts
    contiguous ceil(E/ep) per EP rank, each expert's intermediate dim split over devices/ep.
    ``dtype_bytes``: bytes per parameter, one number or per plan category (int4 weights with
    their scales and zeros come to about 0.5 + scale bytes / group size)."""
    per_cat = (
        dtype_bytes
        if isinstance(dtype_bytes, dict)
        else dict.fromkeys(PLAN_CATEGORIES, dtype_bytes)
    )
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
        cat_params = {"embedding+lm_head": emb, "attention": attn, "norms": norms,
                      "dense_mlp": dense, "router": router, "experts": experts}  # fmt: skip
        by_cat = {k: round(v * per_cat[k]) for k, v in cat_params.items()}
        devices.append({
            "device": dev, "tp_rank": dev % tp, "ep_rank": ep_rank,
            "experts": [first, last - 1] if n_exp else [],
            "params": params, "bytes": sum(by_cat.values()), "by_category_bytes": by_cat,
        })  # fmt: skip
    return {"tp": tp, "ep": ep, "devices": ndev, "expert_tp": moe_tp, "shards": shards,
            "per_device": devices}  # fmt: skip


# How far config.json may outrun the files before it is refused as not describing them: each
# missing layer / expert is listed by name, so the report (and its cost) is bounded by the files.
MAX_MISSING_LAYERS = 16
MAX_MISSING_EXPERTS = 256
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_EXPERT = re.compile(r"\.experts\.(\d+)\.")


def _held(pattern: re.Pattern[str], names: Any) -> int:
    """1 + the largest index ``pattern`` finds in the names (0: none)."""
    return max((int(m.group(1)) + 1 for n in names if (m := pattern.search(n))), default=0)


def check_bounds(root: Path, cfg: Qwen3MoeConfig, found: dict[str, Any], ep: int) -> None:
    """Refuse a config (or --ep) far beyond what the files hold, before anything is enumerated
    (a config claiming 10^8 layers would otherwise list 10^8 layers of missing names)."""
    layers = _held(_LAYER, found)
    if cfg.num_hidden_layers > layers + MAX_MISSING_LAYERS:
        raise InputError(
            root / "config.json",
            f"num_hidden_layers={cfg.num_hidden_layers} but the safetensors files hold "
            f"{layers} layers: the config does not describe these files (more than "
            f"{MAX_MISSING_LAYERS} layers missing)",
        )
    experts = _held(_EXPERT, found)
    if experts and cfg.num_experts > experts + MAX_MISSING_EXPERTS:
        raise InputError(
            root / "config.json",
            f"num_experts={cfg.num_experts} but the safetensors files hold {experts} experts:"
            f" the config does not describe these files (more than {MAX_MISSING_EXPERTS}"
            " experts missing)",
        )
    if ep > max(1, cfg.num_experts):
        raise InputError(f"ep={ep}", f"ep is larger than the number of experts ({cfg.num_experts})")


def inspect(model_dir: str | Path, tp: int = 1, ep: int = 1) -> dict[str, Any]:
    root = existing_dir(model_dir, "checkpoint directory")
    cfg = read_config(root)
    found = read_headers(root)
    check_bounds(root, cfg, found, ep)
    quant = read_quant_config(root)
    layout = match_layout(cfg, found, quant)
    accepted = layout.expected | layout.optional
    missing = sorted(set(layout.expected) - set(found), key=_natural)
    unexpected = sorted(set(found) - set(accepted), key=_natural)
    wrong_shape = [
        {"name": n, "expected": ok[0] if len(ok) == 1 else ok, "found": found[n]["shape"]}
        for n in sorted(set(accepted) & set(found), key=_natural)
        if found[n]["shape"] not in (ok := accepted[n])
    ]
    counts: dict[str, int] = {}
    nbytes: dict[str, int] = {}
    for name, meta in found.items():
        cat = category(logical_name(name))
        counts[cat] = counts.get(cat, 0) + stored_params(name, meta, quant.bits)
        size = math.prod(meta["shape"]) * DTYPE_BYTES.get(meta["dtype"], 4)
        nbytes[cat] = nbytes.get(cat, 0) + size
    dtypes = sorted({m["dtype"] for m in found.values()})
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
        "layout": layout.summary,
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
        "bytes": {"total": sum(nbytes.values()), **dict(sorted(nbytes.items()))},
        "plan": partition_plan(cfg, tp, ep, bytes_per_param(counts, nbytes)),
    }


def bytes_per_param(counts: dict[str, int], nbytes: dict[str, int]) -> dict[str, float]:
    """Stored bytes per parameter of each plan category, from what the files really hold (int4
    qweight + scales + zeros, FP8 + scales, bf16 weights beside fp32 norms...)."""
    groups = {k: (k,) for k in PLAN_CATEGORIES} | {"embedding+lm_head": ("embedding", "lm_head")}
    fallback = sum(nbytes.values()) / max(1, sum(counts.values()))
    out = {}
    for plan_cat, cats in groups.items():
        p = sum(counts.get(c, 0) for c in cats)
        out[plan_cat] = sum(nbytes.get(c, 0) for c in cats) / p if p else fallback
    return out


def _natural(name: str) -> list[object]:
    return [int(t) if t.isdigit() else t for t in name.replace(".", " . ").split()]
