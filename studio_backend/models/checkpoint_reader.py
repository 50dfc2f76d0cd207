"""Read any checkpoint layout as hub-named float weights (what the reference engine loads).

``open_checkpoint(dir).get("model.layers.1.mlp.experts.3.up_proj.weight")`` returns ``[N, K]``
whether the checkpoint stores that weight as is, inside a fused ``mlp.experts.gate_up_proj``,
or quantized (AWQ int4 dequantized with studio_kernels.awq, GPTQ and compressed-tensors
``pack-quantized`` int4 by their packing rules, FP8 times its scale). Layouts and names: studio_backend/models/checkpoint_layouts.py. Dequantized weights are fp32:
``(q - z) * s`` and ``w8 * s`` are exact there, and the loader rounds once to the serving dtype.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from studio_backend.errors import InputError
from studio_backend.models.checkpoint_layouts import (
    FP8_DTYPES,
    FUSED,
    FUSED_SCALE,
    QuantConfig,
    expert_parts,
    gptq_or_awq,
    read_quant_config,
)


class SafetensorsFiles:
    """Tensors by stored name from model.safetensors, an index of shards, or every
    ``*.safetensors`` of the folder."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir
        index = model_dir / "model.safetensors.index.json"
        self._handles: dict[str, Any] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InputError(index, f"not a safetensors index ({exc})") from exc
            self.weight_map: dict[str, str] = dict(weight_map)
            return
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise InputError(model_dir, "no model.safetensors or model.safetensors.index.json")
        self.weight_map = {}
        for f in files:
            self.weight_map |= dict.fromkeys(self._open(f.name).keys(), f.name)

    def _open(self, fname: str) -> Any:
        if fname not in self._handles:
            path = self.dir / fname
            try:
                self._handles[fname] = safe_open(str(path), framework="pt")
            except Exception as exc:  # noqa: BLE001 - a broken file is bad input
                raise InputError(path, f"unreadable safetensors file ({exc})") from exc
        return self._handles[fname]

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def shape(self, name: str) -> list[int]:
        return list(self.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        fname = self.weight_map[name]
        try:
            return self._open(fname).get_tensor(name)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - an index naming the wrong shard is bad input
            raise InputError(self.dir / fname, f"cannot read {name} ({exc})") from exc

    def get_slice(self, name: str) -> Any:
        fname = self.weight_map[name]
        try:
            return self._open(fname).get_slice(name)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputError(self.dir / fname, f"cannot read {name} ({exc})") from exc


def unpack_along_rows(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """GPTQ ``qweight [K*b/32, N]`` -> ``[K, N]``: value ``i`` of word ``j`` (bits ``b*i`` on) is
    row ``(32/b)*j + i`` (AutoGPTQ QuantLinear.pack)."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    vals = (packed.unsqueeze(1) >> shifts.view(1, per, 1)) & (2**bits - 1)
    return vals.reshape(packed.shape[0] * per, packed.shape[1])


def unpack_along_cols(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """GPTQ ``qzeros [G, N*b/32]`` -> ``[G, N]``, natural order within a word."""
    per = 32 // bits
    shifts = torch.arange(0, 32, bits, dtype=torch.int32)
    vals = (packed.unsqueeze(-1) >> shifts) & (2**bits - 1)
    return vals.reshape(packed.shape[0], packed.shape[1] * per)


def dequantize_gptq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    g_idx: torch.Tensor,
    bits: int,
    zero_offset: int,
) -> torch.Tensor:
    """``W[K, N] = (q - (z + zero_offset)) * s`` with group ``g_idx[k]`` for row ``k`` (fp32);
    zero_offset is 1 for v1 checkpoints (AutoGPTQ stored z - 1), 0 for gptq_v2."""
    q = unpack_along_rows(qweight, bits)
    z = unpack_along_cols(qzeros, bits) + zero_offset
    g = g_idx.long()
    return (q - z[g]).float() * scales.float()[g]


def dequantize_ct_int4(
    packed: torch.Tensor,
    scale: torch.Tensor,
    shape: tuple[int, int],
    bits: int,
    zero_point: torch.Tensor | None,
) -> torch.Tensor:
    """compressed-tensors ``pack-quantized``: value i of word j of row n is column
    ``(32/b)j + i``, stored plus ``2**(b-1)`` (pack_to_int32); zero points are packed the same
    way along N; ``W[n, k] = (q - zp) * s`` with group ``k // ceil(K / groups)`` (fp32)."""
    n, k = shape
    offset = 1 << (bits - 1)
    q = unpack_along_cols(packed, bits)[:, :k] - offset
    g = torch.arange(k) // -(-k // scale.shape[1])
    zp = 0
    if zero_point is not None:
        zp = (unpack_along_rows(zero_point, bits)[:n] - offset)[:, g]
    return (q - zp).float() * scale.float()[:, g]


def dequantize_fp8(weight: torch.Tensor, scale: torch.Tensor, block: tuple[int, int] | None):
    """``w * s`` in fp32: per-tensor / per-channel ``weight_scale``, or block-wise
    ``weight_scale_inv [ceil(N/bn), ceil(K/bk)]`` (DeepSeek-V3 ``weight_dequant``: y = x * s)
    or compressed-tensors' block ``weight_scale`` of the same shape."""
    w = weight.float()
    s = scale.float()
    if block is None and s.dim() == 2 and (s.shape[1] > 1 or s.shape[0] != w.shape[0]):
        block = (-(-w.shape[0] // s.shape[0]), -(-w.shape[1] // s.shape[1]))
    if block is None:
        return w * (s.reshape(-1, 1) if s.numel() > 1 else s.reshape(()))
    n, k = w.shape
    s = s.repeat_interleave(block[0], 0)[:n].repeat_interleave(block[1], 1)[:, :k]
    return w * s


class LayoutReader:
    """Hub-named weights out of any layout (see the module docstring)."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir
        self.files = SafetensorsFiles(model_dir)
        self.quant: QuantConfig = read_quant_config(model_dir)

    def get(self, name: str) -> torch.Tensor:
        base = name.removesuffix(".weight")
        f = self.files
        if f"{base}.qweight" in f:
            return self._int4(base, name)
        if f"{base}.weight_packed" in f:
            return self._ct_int4(base, name)
        if name in f:
            if f"{base}.weight_scale_inv" in f:
                return dequantize_fp8(
                    f.get(name), f.get(f"{base}.weight_scale_inv"), self.quant.weight_block_size
                )
            if f"{base}.weight_scale" in f:
                given = self.quant.weight_block_size if self.quant.block_given else None
                return dequantize_fp8(f.get(name), f.get(f"{base}.weight_scale"), given)
            if f.get_slice(name).get_dtype() in FP8_DTYPES:
                raise InputError(self.dir, f"{name} is FP8 but has no weight_scale(_inv)")
            return f.get(name)
        parts = expert_parts(name)
        if parts:
            prefix, _, expert, proj = parts
            for fused, members in FUSED.items():
                if proj in members and f"{prefix}.{fused}" in f:
                    return self._fused(f"{prefix}.{fused}", expert, members.index(proj))
        raise InputError(
            self.dir, f"checkpoint has no tensor {name} (nor a quantized or fused form)"
        )

    def _fused(self, name: str, expert: int, part: int) -> torch.Tensor:
        """Expert ``expert`` of a fused ``[E, rows, cols]`` tensor; gate_up holds gate rows, then
        up rows (transformers' Qwen3MoeExperts: ``gate, up = gate_up.chunk(2)``)."""
        shape = self.files.shape(name)
        if len(shape) != 3 or expert >= shape[0]:
            raise InputError(self.dir, f"{name}: shape {shape} has no expert {expert}")
        sl = self.files.get_slice(name)
        rows = slice(None)
        if name.endswith("gate_up_proj"):
            half = shape[1] // 2
            rows = slice(part * half, (part + 1) * half)
        if sl.get_dtype() not in FP8_DTYPES:
            return sl[expert : expert + 1, rows][0]
        if name + FUSED_SCALE not in self.files:
            raise InputError(self.dir, f"{name} is FP8 but has no {name + FUSED_SCALE}")
        # A block can straddle the gate/up boundary: dequantize the expert, then take the rows.
        w = dequantize_fp8(
            sl[expert : expert + 1][0],
            self.files.get_slice(name + FUSED_SCALE)[expert : expert + 1][0],
            self.quant.weight_block_size,
        )
        return w[rows]

    def _int4(self, base: str, name: str) -> torch.Tensor:
        f, q = self.files, self.quant
        parts = {
            s: f.get(f"{base}.{s}") for s in ("qweight", "qzeros", "scales") if f"{base}.{s}" in f
        }
        if len(parts) < 3:
            raise InputError(self.dir, f"{base}: qweight without qzeros and scales")
        meta = {f"{base}.{s}": {"shape": list(t.shape)} for s, t in parts.items()}
        if f"{base}.g_idx" in f:
            meta[f"{base}.g_idx"] = {"shape": f.shape(f"{base}.g_idx")}
        k_groups, n = parts["scales"].shape
        if q.bits not in (2, 4, 8):
            raise InputError(self.dir, f"{name}: {q.bits}-bit packing is not supported (2, 4, 8)")
        try:
            if gptq_or_awq(base, meta, q) == "awq":
                if q.bits != 4 or (q.method == "awq" and q.version not in ("", "gemm")):
                    raise InputError(
                        self.dir,
                        f"{name}: AWQ {q.bits}-bit {q.version or 'gemm'} packing is not read "
                        "(only 4-bit GEMM, REFERENCE.md section 7)",
                    )
                from studio_kernels.awq import dequantize_awq

                k = parts["qweight"].shape[0]
                w = dequantize_awq(
                    parts["qweight"], parts["qzeros"], parts["scales"], k // k_groups, torch.float32
                )
            else:
                k = parts["qweight"].shape[0] * 32 // q.bits
                g_idx = (
                    f.get(f"{base}.g_idx")
                    if f"{base}.g_idx" in f
                    else torch.arange(k) // -(-k // k_groups)
                )
                offset = 0 if q.checkpoint_format == "gptq_v2" else 1
                w = dequantize_gptq(
                    parts["qweight"], parts["qzeros"], parts["scales"], g_idx, q.bits, offset
                )
        except (ValueError, IndexError, RuntimeError) as exc:
            raise InputError(self.dir, f"{name}: inconsistent quantized tensors ({exc})") from exc
        if w.shape[1] != n:
            raise InputError(self.dir, f"{name}: dequantized to {list(w.shape)}, scales say N={n}")
        return w.t().contiguous()

    def _ct_int4(self, base: str, name: str) -> torch.Tensor:
        f = self.files
        for s in ("weight_scale", "weight_shape"):
            if f"{base}.{s}" not in f:
                raise InputError(self.dir, f"{base}: weight_packed without {s}")
        shape = [int(v) for v in f.get(f"{base}.weight_shape").tolist()]
        zp = f.get(f"{base}.weight_zero_point") if f"{base}.weight_zero_point" in f else None
        if len(shape) != 2 or self.quant.bits not in (2, 4, 8):
            raise InputError(self.dir, f"{name}: weight_shape {shape}, {self.quant.bits} bits")
        try:
            w = dequantize_ct_int4(
                f.get(f"{base}.weight_packed"),
                f.get(f"{base}.weight_scale"),
                (shape[0], shape[1]),
                self.quant.bits,
                zp,
            )
        except (ValueError, IndexError, RuntimeError) as exc:
            raise InputError(self.dir, f"{name}: inconsistent quantized tensors ({exc})") from exc
        if list(w.shape) != shape:
            raise InputError(self.dir, f"{name}: dequantized to {list(w.shape)}, not {shape}")
        return w


def open_checkpoint(model_dir: str | Path) -> LayoutReader:
    """A reader of ``model_dir``'s weights by hub name, whatever the layout."""
    return LayoutReader(Path(model_dir))
