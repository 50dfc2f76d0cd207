"""Quantized checkpoints written from the quantizers' documented layouts, in numpy, sharing no
code with the reader (studio_backend/models/checkpoint_reader.py) or studio_kernels.awq.

Sources: AWQ - REFERENCE.md section 7 (AutoAWQ GEMM: qweight [K, N/8], nibble i of word j holds
column 8j + [0,2,4,6,1,3,5,7][i]); GPTQ - AutoGPTQ auto_gptq/nn_modules/qlinear/
qlinear_cuda_old.py (qweight [K/8, N], row 8j + i in bits 4i of word j; qzeros [G, N/8] in
natural order holding z - 1; g_idx [K]; w = s * (q - (z_stored + 1))), GPTQModel's gptq_v2
stores z itself; FP8 - compressed-tensors per-channel ``weight_scale [N, 1]`` and DeepSeek-V3 /
Qwen3-FP8 block ``weight_scale_inv [ceil(N/bn), ceil(K/bk)]`` with ``w = w8 * s``.

Each writer returns, per quantized hub weight, the numpy arrays a dequantization needs
(``q, z, s, g_idx`` as ints/floats, or ``w8`` bytes and the scale) so tests can build their own
oracle.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
FP8_MAX = 448.0


def quantized_names(weights: dict[str, torch.Tensor]) -> list[str]:
    """What AutoAWQ / GPTQ quantize in a Qwen3-MoE: every projection; not the router
    (``mlp.gate``), embeddings, lm_head or norms."""
    return [n for n in weights if n.endswith("_proj.weight")]


def _copy_meta(src: Path, dst: Path, quantization_config: dict) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy(f, dst / f.name)
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"] = quantization_config
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))


def _minmax_int4(w: np.ndarray, groups: np.ndarray, ngroups: int):
    """Asymmetric min/max int4 of ``w [K, N]`` with row k in group ``groups[k]``: fp16 scales,
    zeros round(-min/s), q = clip(round(w/s) + z, 0, 15)."""
    k, n = w.shape
    s = np.zeros((ngroups, n), np.float16)
    z = np.zeros((ngroups, n), np.int64)
    for g in range(ngroups):
        rows = w[groups == g]
        lo = np.minimum(rows.min(0), 0)
        hi = np.maximum(rows.max(0), 0)
        s[g] = ((hi - lo) / 15).astype(np.float16)
        z[g] = np.clip(np.round(-lo / s[g].astype(np.float32)), 0, 15)
    sf = s.astype(np.float32)[groups]
    q = np.clip(np.round(w / sf) + z[groups], 0, 15).astype(np.int64)
    return q, z, s


def _words(nibbles: np.ndarray) -> np.ndarray:
    """int4 values ``[..., 8]`` -> int32 words, value i in bits 4i..4i+3."""
    word = np.zeros(nibbles.shape[:-1], np.uint32)
    for i in range(8):
        word |= nibbles[..., i].astype(np.uint32) << np.uint32(4 * i)
    return word.view(np.int32)


def write_awq(src: Path, dst: Path, group: int) -> dict[str, dict[str, np.ndarray]]:
    weights = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    truth = {}
    for name, t in weights.items():
        if name not in quantized_names(weights):
            out[name] = t
            continue
        w = t.float().numpy().T  # [K, N]: AWQ quantizes y = x @ W
        k, n = w.shape
        groups = np.arange(k) // group
        q, z, s = _minmax_int4(w, groups, k // group)
        base = name[: -len(".weight")]
        out[base + ".qweight"] = torch.from_numpy(_words(q.reshape(k, n // 8, 8)[..., AWQ_ORDER]))
        zw = _words(z.reshape(k // group, n // 8, 8)[..., AWQ_ORDER])
        out[base + ".qzeros"] = torch.from_numpy(zw)
        out[base + ".scales"] = torch.from_numpy(s)
        truth[name] = {"q": q, "z": z, "s": s, "g_idx": groups}
    _copy_meta(src, dst, {"quant_method": "awq", "bits": 4, "group_size": group,
                          "zero_point": True, "version": "gemm",
                          "modules_to_not_convert": ["gate"]})  # fmt: skip
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return truth


def write_gptq(
    src: Path, dst: Path, group: int, act_order: bool, v2: bool, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """GPTQ; with ``act_order`` rows join groups in a random order (desc_act), so g_idx is not
    k // group. v1 stores z - 1 (z is kept >= 1 so the stored value is a valid uint4)."""
    weights = load_file(str(src / "model.safetensors"))
    rng = np.random.default_rng(seed)
    out: dict[str, torch.Tensor] = {}
    truth = {}
    for name, t in weights.items():
        if name not in quantized_names(weights):
            out[name] = t
            continue
        w = t.float().numpy().T  # [K, N]
        k, n = w.shape
        order = rng.permutation(k) if act_order else np.arange(k)
        groups = np.empty(k, np.int64)
        groups[order] = np.arange(k) // group
        q, z, s = _minmax_int4(w, groups, k // group)
        if not v2:
            z = np.maximum(z, 1)
            q = np.clip(np.round(w / s.astype(np.float32)[groups]) + z[groups], 0, 15).astype(
                np.int64
            )
        stored_z = z if v2 else z - 1
        base = name[: -len(".weight")]
        qw = _words(q.reshape(k // 8, 8, n).transpose(0, 2, 1))  # 8 consecutive rows per word
        out[base + ".qweight"] = torch.from_numpy(qw)
        out[base + ".qzeros"] = torch.from_numpy(_words(stored_z.reshape(k // group, n // 8, 8)))
        out[base + ".scales"] = torch.from_numpy(s)
        out[base + ".g_idx"] = torch.from_numpy(groups.astype(np.int32))
        truth[name] = {"q": q, "z": z, "s": s, "g_idx": groups}
    qc = {"quant_method": "gptq", "bits": 4, "group_size": group, "desc_act": act_order,
          "sym": False, "checkpoint_format": "gptq_v2" if v2 else "gptq"}  # fmt: skip
    _copy_meta(src, dst, qc)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return truth


def write_fp8(
    src: Path, dst: Path, block: tuple[int, int] | None, per_tensor: bool = False
) -> dict[str, dict]:
    """FP8 e4m3: per-channel ``weight_scale [N, 1]`` (block None), one scalar ``weight_scale``
    per weight with a static ``input_scale`` (``per_tensor``) or block ``weight_scale_inv``."""
    weights = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    truth = {}
    for name, t in weights.items():
        if name not in quantized_names(weights):
            out[name] = t
            continue
        w = t.float().numpy()  # [N, K]
        n, k = w.shape
        base = name[: -len(".weight")]
        if per_tensor:
            s = np.float32(np.abs(w).max() / FP8_MAX)
            full = np.full((n, 1), s, np.float32)
            out[base + ".weight_scale"] = torch.tensor(s)  # shape [] as compressed-tensors
            out[base + ".input_scale"] = torch.tensor(np.float32(0.05))  # static activations
        elif block is None:
            s = (np.abs(w).max(1, keepdims=True) / FP8_MAX).astype(np.float32)
            full = s
            out[base + ".weight_scale"] = torch.from_numpy(s)
        else:
            bn, bk = block
            s = np.zeros((-(-n // bn), -(-k // bk)), np.float32)
            for i in range(s.shape[0]):
                for j in range(s.shape[1]):
                    blk = w[i * bn : (i + 1) * bn, j * bk : (j + 1) * bk]
                    s[i, j] = np.abs(blk).max() / FP8_MAX
            full = np.repeat(np.repeat(s, bn, 0)[:n], bk, 1)[:, :k]
            out[base + ".weight_scale_inv"] = torch.from_numpy(s)
        w8 = torch.from_numpy(w / full).to(torch.float8_e4m3fn)
        out[base + ".weight"] = w8
        truth[name] = {"bytes": w8.view(torch.uint8).numpy().copy(), "scale": full}
    qc = (
        {"quant_method": "compressed-tensors", "format": "float-quantized"}
        if block is None
        else {"quant_method": "fp8", "activation_scheme": "dynamic", "fmt": "e4m3",
              "weight_block_size": list(block)}
    )  # fmt: skip
    _copy_meta(src, dst, qc)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return truth


def decode_e4m3fn(b: np.ndarray) -> np.ndarray:
    """float8_e4m3fn bytes -> float32 (OCP FP8 spec: bias 7, no infinities, S.1111.111 = NaN)."""
    b = b.astype(np.int64)
    sign = np.where(b >> 7, -1.0, 1.0)
    e, m = (b >> 3) & 0xF, b & 7
    val = np.where(e == 0, m / 8 * 2.0**-6, (1 + m / 8) * 2.0 ** (e - 7))
    val = np.where((e == 15) & (m == 7), np.nan, val)
    return (sign * val).astype(np.float32)


def dequant_int4(t: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: ``(q - z[g]) * s[g]`` in float32, transposed to the hub's ``[N, K]``."""
    g = t["g_idx"]
    return ((t["q"] - t["z"][g]).astype(np.float32) * t["s"].astype(np.float32)[g]).T


def write_fp8_fused(src: Path, dst: Path, block: tuple[int, int]) -> dict[str, dict]:
    """transformers' FineGrainedFP8 fused experts: ``mlp.experts.gate_up_proj`` float8
    ``[E, 2I, H]`` with ``gate_up_proj_scale_inv [E, ceil(2I/bn), ceil(H/bk)]`` (and the same
    for down_proj); everything else stays float. ``src`` is a fused float checkpoint."""
    weights = load_file(str(src / "model.safetensors"))
    out: dict[str, torch.Tensor] = {}
    truth = {}
    bn, bk = block
    for name, t in weights.items():
        if not name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            out[name] = t
            continue
        w = t.float().numpy()  # [E, R, C]
        e, r, c = w.shape
        s = np.zeros((e, -(-r // bn), -(-c // bk)), np.float32)
        for x in range(e):
            for i in range(s.shape[1]):
                for j in range(s.shape[2]):
                    s[x, i, j] = np.abs(w[x, i * bn : (i + 1) * bn, j * bk : (j + 1) * bk]).max()
        s /= FP8_MAX
        full = np.repeat(np.repeat(s, bn, 1)[:, :r], bk, 2)[:, :, :c]
        w8 = torch.from_numpy(w / full).to(torch.float8_e4m3fn)
        out[name] = w8
        out[name + "_scale_inv"] = torch.from_numpy(s)
        truth[name] = {"bytes": w8.view(torch.uint8).numpy().copy(), "scale": full}
    qc = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": list(block),
          "modules_to_not_convert": ["self_attn", "mlp.gate", "lm_head"]}  # fmt: skip
    _copy_meta(src, dst, qc)
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return truth
