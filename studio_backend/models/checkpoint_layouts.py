"""Checkpoint layouts of Qwen3-MoE weights: which tensor names and shapes stand for each weight.

A weight of the hub naming (seed 001, ``expected_shapes``) can be stored as
- ``float``: ``X.weight`` ``[N, K]`` (out, in), any float dtype;
- ``awq`` (AutoAWQ GEMM): ``X.qweight`` int32 ``[K, N/8]``, ``X.qzeros`` int32 ``[K/G, N/8]``,
  ``X.scales`` ``[K/G, N]`` (REFERENCE.md section 7);
- ``gptq`` (AutoGPTQ / GPTQModel): ``X.qweight`` int32 ``[K*b/32, N]`` packed along K,
  ``X.qzeros`` int32 ``[ceil(K/G), N*b/32]``, ``X.scales`` ``[ceil(K/G), N]``, ``X.g_idx`` ``[K]``;
- ``ct-int4`` (compressed-tensors ``pack-quantized``, llm-compressor W4A16): ``X.weight_packed``
  int32 ``[N, K*b/32]`` packed along K, ``X.weight_scale`` ``[N, K/G]``, ``X.weight_shape``
  ``[2]`` and, when asymmetric, ``X.weight_zero_point`` int32 ``[N*b/32, K/G]`` packed along N;
- ``fp8``: ``X.weight`` float8 ``[N, K]`` + ``X.weight_scale`` per tensor (``[]``/``[1]``), per
  channel (``[N]``/``[N, 1]``) or per block (``[N/bn, K/bk]``, compressed-tensors' ``block``
  strategy) (compressed-tensors / llm-compressor, optional ``X.input_scale``);
- ``fp8-block``: ``X.weight`` float8 ``[N, K]`` + ``X.weight_scale_inv``
  ``[ceil(N/bn), ceil(K/bk)]`` (DeepSeek-V3 / Qwen3 FP8, ``weight_block_size`` in the config).

Experts of a MoE layer may also be fused, as transformers >= 5 holds them in memory and writes
them with ``save_pretrained(save_original_format=False)``: ``mlp.experts.gate_up_proj``
``[E, 2I, H]`` (gate rows first, then up) and ``mlp.experts.down_proj`` ``[E, H, I]``; in FP8
(transformers' FineGrainedFP8) each is float8 with ``<name>_scale_inv``
``[E, ceil(rows/bn), ceil(cols/bk)]``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError
from studio_backend.models.config import Qwen3MoeConfig

FUSED = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}
FUSED_SCALE = "_scale_inv"  # fused FP8 experts: gate_up_proj_scale_inv, down_proj_scale_inv
FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
# Suffixes (after the module name) of each stored form; optional ones may be absent.
FORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "float": {"required": ("weight",), "optional": ()},
    "awq": {"required": ("qweight", "qzeros", "scales"), "optional": ()},
    "gptq": {"required": ("qweight", "qzeros", "scales", "g_idx"), "optional": ()},
    "ct-int4": {
        "required": ("weight_packed", "weight_scale", "weight_shape"),
        "optional": ("weight_zero_point",),
    },
    "fp8": {"required": ("weight", "weight_scale"), "optional": ("input_scale",)},
    "fp8-block": {"required": ("weight", "weight_scale_inv"), "optional": ("input_scale",)},
}
QUANT_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx", "weight_scale", "weight_scale_inv",
                  "input_scale", "weight_packed", "weight_shape", "weight_zero_point")  # fmt: skip
PACKED = ("qweight", "weight_packed")  # int32 words of 32/bits weights each
# Quantizer config files and the keys that name the same thing (first found wins).
QUANT_CONFIG_FILES = ("quantize_config.json", "quant_config.json")
QUANT_KEYS = {
    "method": ("quant_method",),
    "bits": ("bits", "w_bit"),
    "group_size": ("group_size", "q_group_size"),
    "checkpoint_format": ("checkpoint_format",),
    "weight_block_size": ("weight_block_size", "block_structure"),
    "version": ("version",),
}


@dataclass(frozen=True)
class QuantConfig:
    """What the checkpoint's quantizer wrote about itself (None where it says nothing)."""

    method: str | None = None
    bits: int = 4
    group_size: int | None = None  # -1 in GPTQ means one group over K
    checkpoint_format: str = "gptq"  # gptq (v1: qzeros store z - 1) or gptq_v2 (z as is)
    weight_block_size: tuple[int, int] = (128, 128)
    block_given: bool = False  # weight_block_size came from the config, not the default
    version: str = ""  # AutoAWQ kernel layout: gemm (read) or gemv / marlin (other packings)
    source: str = ""


def read_quant_config(model_dir: Path) -> QuantConfig:
    """``quantization_config`` of config.json, else AutoGPTQ's quantize_config.json or AutoAWQ's
    quant_config.json; an unquantized checkpoint gives ``QuantConfig()``."""
    raw: dict[str, Any] | None = None
    source = ""
    cfg_path = model_dir / "config.json"
    if cfg_path.is_file():
        try:
            raw = json.loads(cfg_path.read_text(encoding="utf-8")).get("quantization_config")
        except (OSError, ValueError, AttributeError) as exc:
            raise InputError(cfg_path, f"unreadable config.json ({exc})") from exc
        source = str(cfg_path)
    for name in QUANT_CONFIG_FILES:
        if raw is None and (model_dir / name).is_file():
            try:
                raw = json.loads((model_dir / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(model_dir / name, f"unreadable JSON ({exc})") from exc
            source = str(model_dir / name)
    if not raw:
        return QuantConfig()
    if not isinstance(raw, dict):
        raise InputError(source, "quantization_config must be a JSON object")
    groups = raw.get("config_groups")
    if isinstance(groups, dict) and groups:
        # compressed-tensors: the first scheme's weight arguments (num_bits, group_size, ...)
        first = next(iter(groups.values()))
        weights = first.get("weights") if isinstance(first, dict) else None
        if isinstance(weights, dict):
            raw = raw | {"bits": weights.get("num_bits")} | weights
    got = {k: next((raw[a] for a in keys if raw.get(a) is not None), None)
           for k, keys in QUANT_KEYS.items()}  # fmt: skip
    method = str(got["method"]).lower() if got["method"] else None
    if method is None and Path(source).name == "quant_config.json":
        method = "awq"  # AutoAWQ's own file predates quant_method
    block = got["weight_block_size"] or (128, 128)
    return QuantConfig(
        method=method,
        bits=int(got["bits"] or 4),
        group_size=None if got["group_size"] is None else int(got["group_size"]),
        checkpoint_format=str(got["checkpoint_format"] or "gptq"),
        weight_block_size=(int(block[0]), int(block[1])),
        block_given=got["weight_block_size"] is not None,
        version=str(got["version"] or "").lower(),
        source=source,
    )


def expected_shapes(cfg: Qwen3MoeConfig) -> dict[str, list[int]]:
    """Every Qwen3-MoE weight name (seed 001 naming) with its logical shape."""
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


def fused_shapes(cfg: Qwen3MoeConfig, layer: int) -> dict[str, list[int]]:
    """The two fused expert tensors of a MoE layer (transformers >= 5 naming)."""
    e, m, h = cfg.num_experts, cfg.moe_intermediate_size, cfg.hidden_size
    p = f"model.layers.{layer}.mlp.experts."
    return {p + "gate_up_proj": [e, 2 * m, h], p + "down_proj": [e, h, m]}


_EXPERT = re.compile(r"^(model\.layers\.(\d+)\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$")


def expert_parts(name: str) -> tuple[str, int, int, str] | None:
    """``(experts prefix, layer, expert, proj)`` of a per-expert weight name, else None."""
    m = _EXPERT.match(name)
    return (m[1], int(m[2]), int(m[3]), m[4] + "_proj") if m else None


def form_shapes(
    form: str, n: int, k: int, q: QuantConfig, found: dict[str, list[int]] | None = None
) -> dict[str, list[list[int]]]:
    """Accepted shapes of each suffix of ``form`` for a logical ``[N, K]`` weight. Without a
    group size in the config it is read from the stored scales (``found``: suffix -> shape)."""
    if form == "float":
        return {"weight": [[n, k]]}
    if form in ("fp8", "fp8-block"):
        bn, bk = q.weight_block_size
        scale = ("weight_scale_inv", [[math.ceil(n / bn), math.ceil(k / bk)]]) if form == "fp8-block" \
            else ("weight_scale", [[], [1], [n], [n, 1], [math.ceil(n / bn), math.ceil(k / bk)]])  # fmt: skip
        return {"weight": [[n, k]], scale[0]: scale[1], "input_scale": [[], [1]]}
    g = q.group_size
    if form == "ct-int4":
        cols = (found or {}).get("weight_scale", [n, 1])[-1]
        g = g if g and g > 0 else math.ceil(k / max(1, cols))
        groups, per = math.ceil(k / g), 32 // q.bits
        return {"weight_packed": [[n, math.ceil(k / per)]], "weight_scale": [[n, groups]],
                "weight_shape": [[2]], "weight_zero_point": [[math.ceil(n / per), groups]]}  # fmt: skip
    if g is None or g <= 0:
        rows = (found or {}).get("scales", [1])[0] if g is None else 1
        g = max(1, k // max(1, rows))
    groups = math.ceil(k / g)
    per = 32 // q.bits
    if form == "awq":
        return {"qweight": [[k, n // 8]], "qzeros": [[groups, n // 8]], "scales": [[groups, n]]}
    return {"qweight": [[k // per, n]], "qzeros": [[groups, n // per]], "scales": [[groups, n]],
            "g_idx": [[k]]}  # fmt: skip


def stored_form(base: str, found: dict[str, dict[str, Any]], q: QuantConfig) -> str | None:
    """Which form stores module ``base`` (``X`` of ``X.weight``), None when nothing does."""
    has = {s for s in QUANT_SUFFIXES + ("weight",) if f"{base}.{s}" in found}
    if "qweight" in has:
        return gptq_or_awq(base, found, q)
    if "weight_packed" in has:
        return "ct-int4"
    if "weight_scale_inv" in has:
        return "fp8-block"
    if "weight_scale" in has:
        return "fp8"
    if "weight" in has:
        return "fp8" if found[f"{base}.weight"]["dtype"] in FP8_DTYPES else "float"
    return None


def gptq_or_awq(base: str, found: dict[str, dict[str, Any]], q: QuantConfig) -> str:
    """AWQ packs qweight along N (``[K, N/8]``), GPTQ along K (``[K*b/32, N]``): the last dim of
    ``scales [groups, N]`` tells them apart; without scales the config (or g_idx) decides."""
    qw = found[f"{base}.qweight"]["shape"]
    sc = found.get(f"{base}.scales", {}).get("shape")
    if sc and len(qw) == 2 and len(sc) == 2:
        return "gptq" if qw[1] == sc[1] else "awq"
    return "gptq" if q.method == "gptq" or f"{base}.g_idx" in found else "awq"


def logical_name(stored: str) -> str:
    """The hub weight a stored tensor belongs to (fused tensors map to themselves)."""
    base, _, suffix = stored.rpartition(".")
    if suffix in QUANT_SUFFIXES:
        return base + ".weight"
    return stored


@dataclass
class LayoutMatch:
    """A checkpoint's tensors matched against the config: the form of every hub weight, the
    stored names that layout needs (``expected``; ``optional`` may be absent) with their
    accepted shapes, and the summary shown to the user."""

    forms: dict[str, str]
    expected: dict[str, list[list[int]]]
    optional: dict[str, list[list[int]]]
    fused_layers: list[int]
    summary: dict[str, Any]


def _family(name: str) -> str:
    return re.sub(r"\.\d+\.", ".N.", name)


def match_layout(
    cfg: Qwen3MoeConfig, found: dict[str, dict[str, Any]], q: QuantConfig
) -> LayoutMatch:
    """Decide per weight which form the checkpoint uses; a weight stored in no form takes the
    form of its family (same name up to layer/expert numbers), so a missing expert of an AWQ
    checkpoint is reported as its missing ``qweight``/``qzeros``/``scales``."""
    logical = expected_shapes(cfg)
    fused_layers = [i for i in cfg.moe_layers if any(n in found for n in fused_shapes(cfg, i))]
    expected: dict[str, list[list[int]]] = {}
    fused_fp8 = 0
    bn, bk = q.weight_block_size
    for i in fused_layers:
        for n, (e, rows, cols) in fused_shapes(cfg, i).items():
            expected[n] = [[e, rows, cols]]
            if n in found and found[n]["dtype"] in FP8_DTYPES:
                fused_fp8 += 1
                expected[n + FUSED_SCALE] = [[e, math.ceil(rows / bn), math.ceil(cols / bk)]]
    stored: dict[str, str | None] = {}
    for name, shape in logical.items():
        parts = expert_parts(name)
        if parts and parts[1] in fused_layers:
            continue
        if len(shape) == 2 and name.endswith(".weight"):
            stored[name] = stored_form(name[: -len(".weight")], found, q)
        else:
            stored[name] = "float" if name in found else None
    votes: dict[str, dict[str, int]] = {}
    for name, form in stored.items():
        if form:
            fam = votes.setdefault(_family(name), {})
            fam[form] = fam.get(form, 0) + 1
    forms: dict[str, str] = {}
    optional: dict[str, list[list[int]]] = {}
    for name, form in stored.items():
        fam = votes.get(_family(name), {})
        form = form or (max(fam, key=fam.__getitem__) if fam else "float")
        forms[name] = form
        shape = logical[name]
        if len(shape) != 2:
            expected[name] = [shape]
            continue
        base = name[: -len(".weight")]
        have = {s: found[f"{base}.{s}"]["shape"] for s in QUANT_SUFFIXES if f"{base}.{s}" in found}
        for suffix, shapes in form_shapes(form, shape[0], shape[1], q, have).items():
            if suffix in FORMS[form]["optional"]:
                optional[f"{base}.{suffix}"] = shapes
            elif suffix in FORMS[form]["required"]:
                expected[f"{base}.{suffix}"] = shapes
    counts: dict[str, int] = {}
    for form in forms.values():
        counts[form] = counts.get(form, 0) + 1
    moe = cfg.moe_layers
    experts = (
        "none (dense)" if not moe
        else "fused" if len(fused_layers) == len(moe)
        else "per-expert" if not fused_layers
        else "mixed"
    )  # fmt: skip
    quant = sorted({f for f in counts if f != "float"} | ({"fp8-block"} if fused_fp8 else set()))
    files = sorted({m["file"] for m in found.values()})
    summary = {
        "experts": experts,
        "fused_layers": fused_layers,
        "quantization": "+".join(quant) or "none",
        "forms": dict(sorted(counts.items())),  # per hub weight outside fused tensors
        "fused_fp8_tensors": fused_fp8,
        "quant_config": q.source or None,
        "files": len(files),
        "index": any(m.get("indexed") for m in found.values()),
    }
    return LayoutMatch(forms, expected, optional, fused_layers, summary)


def stored_params(name: str, meta: dict[str, Any], bits: int) -> int:
    """Parameters a stored tensor stands for: a packed qweight holds 32/bits weights per int32;
    scales, zeros, g_idx and FP8 scales hold none of the model's parameters."""
    n = math.prod(meta["shape"])
    suffix = name.rpartition(".")[2]
    if suffix in PACKED:
        return n * 32 // bits
    return 0 if suffix in QUANT_SUFFIXES or name.endswith(FUSED_SCALE) else n
