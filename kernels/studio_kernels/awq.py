"""AWQ int4 (W4A16) packing, dequantization and the repack into the fused kernel's layout.

AWQ layout (REFERENCE.md section 7), for a weight ``W[K, N]`` used as ``y = x @ W``:

- ``qweight`` int32 ``[K, N/8]``: nibble ``i`` (bits ``4i..4i+3``) of word ``j`` holds column
  ``8*j + AWQ_ORDER[i]``;
- ``qzeros`` int32 ``[K/G, N/8]`` packed the same way; ``scales`` fp16 ``[K/G, N]``;
- ``w = (q - z) * s``.

``>>`` on int32 is arithmetic (the top nibble drags the sign bit along), so every unpack masks
with ``& 0xF``.

The fused kernel's layout (``FusedLayout``) is transposed and packed along K in natural order:
``qweight[N, K/8]`` with nibble ``i`` of word ``j`` holding row ``k = 8*j + i``, ``zeros[N, K/G]``
uint8 and ``scales[N, K/G]``. A program of the fused kernel owns a tile of output columns and
walks K, so each output column's int4 data is one contiguous run of words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# AWQ_REVERSE_ORDER[c] = nibble position holding column c of a word (inverse of AWQ_ORDER).
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)


def _check_int4(values: torch.Tensor) -> None:
    if values.numel() and (int(values.min()) < 0 or int(values.max()) > 15):
        raise ValueError("int4 values must lie in [0, 15]")


def pack_awq(intweight: torch.Tensor) -> torch.Tensor:
    """Pack ``[K, N]`` int4 values (0..15) into AWQ int32 words ``[K, N/8]``."""
    rows, cols = intweight.shape
    if cols % 8:
        raise ValueError(f"N={cols} is not a multiple of 8")
    _check_int4(intweight)
    vals = intweight.to(torch.int64).reshape(rows, cols // 8, 8)
    vals = vals[:, :, list(AWQ_ORDER)]  # nibble i <- column AWQ_ORDER[i]
    words = (vals << (4 * torch.arange(8, dtype=torch.int64))).sum(-1)
    # Values up to 2**32 - 1: wrap to the int32 bit pattern (two's complement).
    return (words - ((words >> 31) << 32)).to(torch.int32)


def unpack_awq(qweight: torch.Tensor) -> torch.Tensor:
    """Unpack AWQ int32 words ``[K, N/8]`` into int4 values ``[K, N]`` (int32, 0..15)."""
    nibbles = (qweight.unsqueeze(-1) >> _SHIFTS.to(qweight.device)) & 0xF
    cols = nibbles[:, :, list(AWQ_REVERSE_ORDER)]  # column c <- nibble AWQ_REVERSE_ORDER[c]
    return cols.reshape(qweight.shape[0], -1)


def dequantize_awq(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``W[K, N] = (q - z) * s`` in ``dtype`` (default ``scales.dtype``), rounded once from fp32."""
    q = unpack_awq(qweight)
    z = unpack_awq(qzeros)
    rows = q.shape[0]
    if rows % group_size or z.shape[0] != rows // group_size:
        raise ValueError(f"K={rows} does not match group_size={group_size} and qzeros")
    z = z.repeat_interleave(group_size, dim=0)
    s = scales.float().repeat_interleave(group_size, dim=0)
    return ((q - z).float() * s).to(dtype or scales.dtype)


def quantize_awq(
    weight: torch.Tensor, group_size: int, scale_dtype: torch.dtype = torch.float16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric min/max int4 quantization of ``W[K, N]`` per (group of K rows, column)."""
    rows, cols = weight.shape
    if rows % group_size:
        raise ValueError(f"K={rows} is not a multiple of group_size={group_size}")
    w = weight.float().reshape(rows // group_size, group_size, cols)
    lo = w.amin(1).clamp(max=0)
    hi = w.amax(1).clamp(min=0)
    scale = ((hi - lo) / 15).clamp(min=1e-8).to(scale_dtype)
    s = scale.float()
    zero = torch.round(-lo / s).clamp(0, 15)
    q = torch.round(w / s.unsqueeze(1) + zero.unsqueeze(1)).clamp(0, 15)
    qweight = pack_awq(q.reshape(rows, cols).to(torch.int32))
    qzeros = pack_awq(zero.to(torch.int32))
    return qweight, qzeros, scale


@dataclass(frozen=True)
class FusedLayout:
    """One weight in the fused kernel's layout (see the module docstring)."""

    qweight: torch.Tensor  # int32 [N, K/8], K-packed, natural nibble order
    zeros: torch.Tensor  # uint8 [N, K/G]
    scales: torch.Tensor  # [N, K/G]


def pack_k(intweight_nk: torch.Tensor) -> torch.Tensor:
    """Pack ``[N, K]`` int4 values along K in natural order into int32 ``[N, K/8]``."""
    n, k = intweight_nk.shape
    if k % 8:
        raise ValueError(f"K={k} is not a multiple of 8")
    vals = intweight_nk.to(torch.int64).reshape(n, k // 8, 8)
    words = (vals << (4 * torch.arange(8, dtype=torch.int64, device=vals.device))).sum(-1)
    return (words - ((words >> 31) << 32)).to(torch.int32)


def unpack_k(qweight_nk: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_k`: int32 ``[N, K/8]`` -> int4 values ``[N, K]``."""
    nibbles = (qweight_nk.unsqueeze(-1) >> _SHIFTS.to(qweight_nk.device)) & 0xF
    return nibbles.reshape(qweight_nk.shape[0], -1)


def repack_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> FusedLayout:
    """AWQ tensors -> the fused kernel's layout (torch)."""
    return FusedLayout(
        qweight=pack_k(unpack_awq(qweight).t()),
        zeros=unpack_awq(qzeros).t().contiguous().to(torch.uint8),
        scales=scales.t().contiguous(),
    )


def dequantize_fused(layout: FusedLayout, group_size: int) -> torch.Tensor:
    """``W[K, N]`` from the fused layout (for tests and the tiled CPU path)."""
    q = unpack_k(layout.qweight)  # [N, K]
    z = layout.zeros.to(torch.int32).repeat_interleave(group_size, dim=1)
    s = layout.scales.float().repeat_interleave(group_size, dim=1)
    return ((q - z).float() * s).to(layout.scales.dtype).t()
