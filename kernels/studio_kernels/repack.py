"""Triton repack of AWQ ``qweight[K, N/8]`` into the fused layout ``qweight[N, K/8]``.

Same result as :func:`studio_kernels.awq.repack_awq` (the tests check equality bit for bit); on a GPU
it avoids the int64 intermediates of the torch version. Zeros and scales are small (one entry
per group) and are transposed in torch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from studio_kernels.awq import FusedLayout, unpack_awq


@triton.jit
def _repack_kernel(
    src_ptr,  # int32 [K, N/8], AWQ order
    dst_ptr,  # int32 [N, K/8], natural order along K
    K,
    N,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_k = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_k[:, None] < K) & (offs_n[None, :] < N)
    words = tl.load(src_ptr + offs_k[:, None] * (N // 8) + offs_n[None, :] // 8, mask=mask, other=0)
    col = offs_n % 8
    # Column c of a word sits in nibble AWQ_REVERSE_ORDER[c] = c // 2 + 4 * (c % 2).
    shift = 4 * (col // 2 + 4 * (col % 2))
    nib = ((words >> shift[None, :]) & 0xF).to(tl.uint32)  # [BLOCK_K, BLOCK_N]
    nib_nk = tl.trans(nib)  # [BLOCK_N, BLOCK_K]
    grouped = tl.reshape(nib_nk, (BLOCK_N, BLOCK_K // 8, 8))
    pos = tl.arange(0, 8).to(tl.uint32)
    # Disjoint nibbles: the sum is the bitwise OR and never exceeds 2**32 - 1 in uint32.
    packed = tl.sum(grouped << (4 * pos)[None, None, :], axis=2)
    packed = packed.to(tl.int32, bitcast=True)
    offs_kw = pid_k * (BLOCK_K // 8) + tl.arange(0, BLOCK_K // 8)
    out_mask = (offs_n[:, None] < N) & (offs_kw[None, :] < K // 8)
    tl.store(dst_ptr + offs_n[:, None] * (K // 8) + offs_kw[None, :], packed, mask=out_mask)


def repack_awq_triton(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor
) -> FusedLayout:
    """AWQ tensors -> the fused kernel's layout, the int4 weights repacked by a Triton kernel."""
    k, n8 = qweight.shape
    n = n8 * 8
    if k % 8:
        raise ValueError(f"K={k} is not a multiple of 8")
    dst = torch.empty((n, k // 8), dtype=torch.int32, device=qweight.device)
    block_k, block_n = 32, 32
    grid = (triton.cdiv(k, block_k), triton.cdiv(n, block_n))
    _repack_kernel[grid](qweight.contiguous(), dst, k, n, BLOCK_K=block_k, BLOCK_N=block_n)
    return FusedLayout(
        qweight=dst,
        zeros=unpack_awq(qzeros).t().contiguous().to(torch.uint8),
        scales=scales.t().contiguous(),
    )
