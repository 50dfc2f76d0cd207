"""A tiny Qwen3-MoE checkpoint quantized in numpy with AutoAWQ GEMM and AutoGPTQ (v1) packing,
written from the originals (not from our readers), with its own numpy dequantization.

- AutoAWQ ``awq/modules/linear/gemm.py`` ``WQLinear_GEMM.from_linear``: ``intweight`` [in, out]
  = ``round((W + zeros*scales) / scales)`` transposed; ``qweight[:, col] |= intweight[:, col*8 +
  order_map[i]] << (i*4)`` with ``order_map = [0, 2, 4, 6, 1, 3, 5, 7]``; ``qzeros`` [in/G, out/8]
  packed the same way; ``scales`` fp16 [in/G, out]. Dequantized: ``(q - z) * s``.
- AutoGPTQ ``auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py`` ``QuantLinear.pack``: intweight
  [in, out]; ``qweight[row] |= intweight[j] << (bits * (j - i))`` for 8 consecutive input rows
  (natural order, [in/8, out]); ``zeros -= 1`` then packed along out in natural order
  ([groups, out/8]); ``scales`` fp16 [groups, out]; ``g_idx`` int32 [in]. ``gptq.py``
  ``fasterquant``: ``g_idx = [i // groupsize for i in range(columns)]``, with ``actorder``
  ``g_idx = g_idx[invperm]`` (a column's group is its position in the act-order permutation
  // G). Dequantized: ``(q - (stored_zero + 1)) * s`` of the row's ``g_idx`` group.

Scales are rounded UP to 7 significant bits before the fp16 cast, so ``(q - z) * s`` is exact in
fp16, bf16-free float32 and float64 alike: the expected tensor does not depend on the order or
precision a reader computes in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
BITS, MAXQ = 4, 15

HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 64, 4, 2, 16
EXPERTS, MOE_INTER, LAYERS, VOCAB, GROUP = 4, 32, 2, 128, 32


def qwen3_moe_config() -> dict:
    """config.json fields as transformers' Qwen3MoeConfig spells them."""
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "hidden_size": HIDDEN,
        "intermediate_size": 128,
        "moe_intermediate_size": MOE_INTER,
        "num_experts": EXPERTS,
        "num_experts_per_tok": 2,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "vocab_size": VOCAB,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "output_router_logits": False,
        "router_aux_loss_coef": 0.001,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 4096,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "use_cache": True,
    }


def quantized_linears() -> dict[str, tuple[int, int]]:
    """Hub prefix -> (out, in) of every projection a W4A16 quantizer converts."""
    shapes: dict[str, tuple[int, int]] = {}
    for i in range(LAYERS):
        a = f"model.layers.{i}.self_attn"
        shapes[f"{a}.q_proj"] = (HEADS * HEAD_DIM, HIDDEN)
        shapes[f"{a}.k_proj"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[f"{a}.v_proj"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[f"{a}.o_proj"] = (HIDDEN, HEADS * HEAD_DIM)
        for e in range(EXPERTS):
            x = f"model.layers.{i}.mlp.experts.{e}"
            shapes[f"{x}.gate_proj"] = (MOE_INTER, HIDDEN)
            shapes[f"{x}.up_proj"] = (MOE_INTER, HIDDEN)
            shapes[f"{x}.down_proj"] = (HIDDEN, MOE_INTER)
    return shapes


def float_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tensors quantizers leave in float (fp16): embeddings, lm_head, norms, routers."""
    t = {
        "model.embed_tokens.weight": rng.normal(0, 0.02, (VOCAB, HIDDEN)),
        "lm_head.weight": rng.normal(0, 0.02, (VOCAB, HIDDEN)),
        "model.norm.weight": 1 + rng.normal(0, 0.1, (HIDDEN,)),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        t[f"{p}.input_layernorm.weight"] = 1 + rng.normal(0, 0.1, (HIDDEN,))
        t[f"{p}.post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, (HIDDEN,))
        t[f"{p}.self_attn.q_norm.weight"] = 1 + rng.normal(0, 0.1, (HEAD_DIM,))
        t[f"{p}.self_attn.k_norm.weight"] = 1 + rng.normal(0, 0.1, (HEAD_DIM,))
        t[f"{p}.mlp.gate.weight"] = rng.normal(0, 0.02, (EXPERTS, HIDDEN))
    return {k: v.astype(np.float16) for k, v in t.items()}


def _exact_scale(scale: np.ndarray) -> np.ndarray:
    """Round up to 7 significant bits, then fp16 (exact): (q - z) * s then needs <= 11 bits."""
    m, e = np.frexp(scale.astype(np.float64))
    return np.ldexp(np.ceil(m * 128) / 128, e).astype(np.float16)


@dataclass
class Quantized:
    """Integer codes [out, in], zero points and fp16 scales [groups, out], group of each input."""

    w: np.ndarray
    q: np.ndarray
    z: np.ndarray
    s: np.ndarray
    g_idx: np.ndarray
    perm: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def quantize(w: np.ndarray, group: int, sym: bool, act_order: np.ndarray | None) -> Quantized:
    """Min/max 4-bit group quantization (AWQ asym; GPTQ sym zero = 8 or asym), groups over the
    input columns in ``act_order`` (GPTQ desc_act) or natural order."""
    n, k = w.shape
    perm = np.arange(k) if act_order is None else act_order
    invperm = np.argsort(perm)
    g_idx = (np.arange(k) // group)[invperm].astype(np.int32)
    groups = k // group
    q = np.zeros((n, k), np.int64)
    z = np.zeros((groups, n), np.int64)
    s = np.zeros((groups, n), np.float16)
    for g in range(groups):
        cols = perm[g * group : (g + 1) * group]
        blk = w[:, cols].astype(np.float64)
        lo, hi = np.minimum(blk.min(1), 0), np.maximum(blk.max(1), 0)
        if sym:
            amax = np.maximum(-lo, hi)
            scale = _exact_scale(2 * amax / MAXQ)
            zero = np.full(n, (MAXQ + 1) // 2)
        else:
            scale = _exact_scale((hi - lo) / MAXQ)
            zero = np.clip(np.round(-lo / scale.astype(np.float64)), 1, MAXQ).astype(np.int64)
        codes = np.round(blk / scale.astype(np.float64)[:, None]) + zero[:, None]
        q[:, cols] = np.clip(codes, 0, MAXQ).astype(np.int64)
        z[g], s[g] = zero, scale
    return Quantized(w=w, q=q, z=z, s=s, g_idx=g_idx, perm=perm)


def dequantize(qz: Quantized) -> np.ndarray:
    """``(q - z) * s`` of each input column's group, float64 [out, in] (exact, see module doc)."""
    z = qz.z[qz.g_idx].T.astype(np.float64)
    s = qz.s[qz.g_idx].T.astype(np.float64)
    return (qz.q - z) * s


def _to_int32(words: np.ndarray) -> np.ndarray:
    return words.astype(np.uint32).view(np.int32)


def pack_awq(qz: Quantized) -> dict[str, np.ndarray]:
    """WQLinear_GEMM.from_linear's packing."""
    intweight = qz.q.T.astype(np.uint32)  # [in, out]
    zeros = qz.z.astype(np.uint32)  # [groups, out]

    def pack_cols(x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], x.shape[1] // 8), np.uint32)
        for col in range(x.shape[1] // 8):
            for i in range(8):
                out[:, col] |= x[:, col * 8 + AWQ_ORDER[i]] << np.uint32(i * BITS)
        return _to_int32(out)

    return {"qweight": pack_cols(intweight), "qzeros": pack_cols(zeros), "scales": qz.s}


def pack_gptq(qz: Quantized) -> dict[str, np.ndarray]:
    """QuantLinear.pack (qlinear_cuda_old): rows packed along in, zeros stored minus one."""
    intweight = qz.q.T.astype(np.uint32)  # [in, out]
    qweight = np.zeros((intweight.shape[0] // 32 * BITS, intweight.shape[1]), np.uint32)
    i = row = 0
    while row < qweight.shape[0]:
        for j in range(i, i + 32 // BITS):
            qweight[row] |= intweight[j] << np.uint32(BITS * (j - i))
        i += 32 // BITS
        row += 1
    zeros = (qz.z - 1).astype(np.uint32)
    qzeros = np.zeros((zeros.shape[0], zeros.shape[1] // 32 * BITS), np.uint32)
    i = col = 0
    while col < qzeros.shape[1]:
        for j in range(i, i + 32 // BITS):
            qzeros[:, col] |= zeros[:, j] << np.uint32(BITS * (j - i))
        i += 32 // BITS
        col += 1
    return {
        "qweight": _to_int32(qweight),
        "qzeros": _to_int32(qzeros),
        "scales": qz.s,
        "g_idx": qz.g_idx,
    }


def unpack_awq(t: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AutoAWQ's reading side (awq/utils/packing_utils.py unpack_awq + reverse_awq_order):
    codes [out, in] and zeros [groups, out], used to check the packer above."""
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    reverse = np.argsort(AWQ_ORDER)

    def unpack(x: np.ndarray) -> np.ndarray:
        u = (x.view(np.uint32)[:, :, None] >> shifts) & 0xF  # [rows, words, nibble]
        return u[:, :, reverse].reshape(x.shape[0], -1)

    return unpack(t["qweight"]).T.astype(np.int64), unpack(t["qzeros"]).astype(np.int64)


def unpack_gptq(t: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AutoGPTQ's forward (qlinear_cuda_old, wf = [0, 4, ..., 28]): codes [out, in] and the
    zeros it uses (stored + 1) [groups, out]."""
    shifts = np.arange(0, 32, 4, dtype=np.uint32)
    qw = t["qweight"].view(np.uint32)
    codes = ((qw[:, None, :] >> shifts[None, :, None]) & 0xF).reshape(-1, qw.shape[1])
    qzw = t["qzeros"].view(np.uint32)
    zeros = ((qzw[:, :, None] >> shifts) & 0xF).reshape(qzw.shape[0], -1) + 1
    return codes.T.astype(np.int64), zeros.astype(np.int64)


@dataclass
class Fixture:
    """A written checkpoint and what a reader must return for each hub weight name."""

    path: Path
    expected: dict[str, np.ndarray]  # hub name -> float64 [out, in] (or stored float)
    weights: dict[str, np.ndarray]  # hub name -> the float weight before quantization
    scales: dict[str, np.ndarray]  # hub name -> per-element scale [out, in] (error bound)


def write_checkpoint(
    path: Path,
    method: str,
    *,
    desc_act: bool = False,
    sym: bool = True,
    shards: int = 1,
    config_in: str = "config",
    drop_keys: tuple[str, ...] = (),
    seed: int = 0,
) -> Fixture:
    """Write config.json + safetensors (``shards`` files with an index when > 1).

    ``method`` is ``awq`` or ``gptq``; ``config_in`` ``config`` puts quantization_config in
    config.json, ``sidecar`` only in AutoGPTQ's quantize_config.json / AutoAWQ's
    quant_config.json."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    expected: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    scales: dict[str, np.ndarray] = {}
    for name, arr in float_tensors(rng).items():
        tensors[name] = arr
        expected[name] = arr.astype(np.float64)
    for prefix, (n, k) in quantized_linears().items():
        w = rng.normal(0, 0.02, (n, k)).astype(np.float32)
        act_order = rng.permutation(k) if desc_act else None
        qz = quantize(w, GROUP, sym=sym if method == "gptq" else False, act_order=act_order)
        packed = pack_awq(qz) if method == "awq" else pack_gptq(qz)
        for suffix, arr in packed.items():
            tensors[f"{prefix}.{suffix}"] = arr
        hub = f"{prefix}.weight"
        expected[hub] = dequantize(qz)
        weights[hub] = w.astype(np.float64)
        scales[hub] = qz.s[qz.g_idx].T.astype(np.float64)

    config = qwen3_moe_config()
    if method == "awq":
        qcfg = {
            "quant_method": "awq",
            "bits": BITS,
            "group_size": GROUP,
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": None,
        }
        sidecar = (
            "quant_config.json",
            {"zero_point": True, "q_group_size": GROUP, "w_bit": BITS, "version": "GEMM"},
        )
    else:
        qcfg = {
            "quant_method": "gptq",
            "bits": BITS,
            "group_size": GROUP,
            "damp_percent": 0.01,
            "desc_act": desc_act,
            "static_groups": False,
            "sym": sym,
            "true_sequential": True,
            "model_name_or_path": None,
            "model_file_base_name": "model",
            "checkpoint_format": "gptq",
        }
        auto_gptq = {k: v for k, v in qcfg.items() if k not in ("quant_method",)}
        sidecar = ("quantize_config.json", auto_gptq)
    for key in drop_keys:  # older writers leave keys out (e.g. checkpoint_format before v2)
        qcfg.pop(key)
        sidecar[1].pop(key, None)
    if config_in == "config":
        config["quantization_config"] = qcfg
    else:
        (path / sidecar[0]).write_text(json.dumps(sidecar[1], indent=2))
    (path / "config.json").write_text(json.dumps(config, indent=2))

    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for s in range(shards):
            fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            save_file(part, str(path / fname), metadata={"format": "pt"})
            weight_map.update({n: fname for n in part})
        total = sum(a.nbytes for a in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (path / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return Fixture(path=path, expected=expected, weights=weights, scales=scales)
