"""Fused W4A16 MoE decode kernel in Triton.

Two launches over the touched experts (a program per (expert, output tile)):

1. ``_gate_up_kernel``: loads the expert's tokens once, walks H in ``BLOCK_K`` steps, loads the
   int4 words of the gate and up rows, dequantizes them in registers (never written back) and
   accumulates both projections; SwiGLU is applied on chip and ``h`` (tiny: pairs x I) stored.
2. ``_down_kernel``: the same for the down projection over I, scaled by the routing weight, one
   fp32 row per (token, slot); the K rows of a token are summed at the end.

Every touched expert's weights are read exactly once per call: all tokens routed to an expert
share its programs. The routing is sorted into per-expert token lists on the device without a
host sync (static grid ``min(E, B*K)``), so a call is CUDA-graph capturable.

Under ``TRITON_INTERPRET=1`` (CPU) the dot operands are fp32 because the interpreter's bf16
``tl.dot`` is wrong (REFERENCE.md section 7); on a GPU they are the activation dtype. Dots ask for
``input_precision="ieee"`` so that fp32 activations are not silently rounded to TF32 (bf16/fp16
operands are exact in the MMA either way).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from studio_kernels.experts import FusedExperts


@triton.jit
def _dequant_tile(
    q_ptr, z_ptr, s_ptr, rows, row_mask, k0, K, GROUP: tl.constexpr, BLOCK_K: tl.constexpr
):
    """Rows ``rows`` x columns ``[k0, k0+BLOCK_K)`` of a fused-layout weight, fp32 [R, BLOCK_K].

    BLOCK_K divides GROUP, so the whole tile shares one zero point and scale per row.
    """
    offs_k = k0 + tl.arange(0, BLOCK_K)
    words = tl.load(
        q_ptr + rows[:, None] * (K // 8) + (offs_k // 8)[None, :], mask=row_mask[:, None], other=0
    )
    q = (words >> ((offs_k % 8) * 4)[None, :]) & 0xF
    g = k0 // GROUP
    z = tl.load(z_ptr + rows * (K // GROUP) + g, mask=row_mask, other=0).to(tl.int32)
    s = tl.load(s_ptr + rows * (K // GROUP) + g, mask=row_mask, other=0.0).to(tl.float32)
    return (q - z[:, None]).to(tl.float32) * s[:, None]


@triton.jit
def _gate_up_kernel(
    x_ptr, q_ptr, z_ptr, s_ptr, pairs_ptr, experts_ptr, h_ptr,
    H, INTER, num_pairs,
    TOPK: tl.constexpr, GROUP: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    slot = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(experts_ptr + slot)
    if e >= 0:
        pair = tl.load(pairs_ptr + slot * BLOCK_T + tl.arange(0, BLOCK_T))
        valid = pair < num_pairs
        tok = pair // TOPK
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < INTER
        e64 = e.to(tl.int64)
        q_base = q_ptr + e64 * (2 * INTER) * (H // 8)
        z_base = z_ptr + e64 * (2 * INTER) * (H // GROUP)
        s_base = s_ptr + e64 * (2 * INTER) * (H // GROUP)
        cdt = h_ptr.dtype.element_ty  # dot operand dtype: activation dtype, fp32 in the interpreter
        acc_g = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
        acc_u = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, H, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            xk = tl.load(x_ptr + tok[:, None] * H + offs_k[None, :], mask=valid[:, None], other=0.0)
            xk = xk.to(cdt)
            wg = _dequant_tile(q_base, z_base, s_base, offs_n, n_mask, k0, H, GROUP, BLOCK_K)
            wu = _dequant_tile(
                q_base, z_base, s_base, INTER + offs_n, n_mask, k0, H, GROUP, BLOCK_K
            )
            acc_g += tl.dot(xk, tl.trans(wg.to(cdt)), input_precision="ieee")
            acc_u += tl.dot(xk, tl.trans(wu.to(cdt)), input_precision="ieee")
        h = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
        mask = valid[:, None] & n_mask[None, :]
        tl.store(h_ptr + pair[:, None] * INTER + offs_n[None, :], h.to(cdt), mask=mask)


@triton.jit
def _down_kernel(
    h_ptr, q_ptr, z_ptr, s_ptr, pairs_ptr, experts_ptr, w_ptr, out_ptr,
    H, INTER, num_pairs,
    GROUP: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    slot = tl.program_id(0)
    pid_n = tl.program_id(1)
    e = tl.load(experts_ptr + slot)
    if e >= 0:
        pair = tl.load(pairs_ptr + slot * BLOCK_T + tl.arange(0, BLOCK_T))
        valid = pair < num_pairs
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < H
        e64 = e.to(tl.int64)
        q_base = q_ptr + e64 * H * (INTER // 8)
        z_base = z_ptr + e64 * H * (INTER // GROUP)
        s_base = s_ptr + e64 * H * (INTER // GROUP)
        cdt = h_ptr.dtype.element_ty
        acc = tl.zeros((BLOCK_T, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, INTER, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            hk = tl.load(
                h_ptr + pair[:, None] * INTER + offs_k[None, :], mask=valid[:, None], other=0.0
            )
            wd = _dequant_tile(q_base, z_base, s_base, offs_n, n_mask, k0, INTER, GROUP, BLOCK_K)
            acc += tl.dot(hk, tl.trans(wd.to(cdt)), input_precision="ieee")
        rw = tl.load(w_ptr + pair, mask=valid, other=0.0).to(tl.float32)
        acc = acc * rw[:, None]
        mask = valid[:, None] & n_mask[None, :]
        tl.store(out_ptr + pair[:, None] * H + offs_n[None, :], acc, mask=mask)


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def align_routing(
    topk_ids: torch.Tensor, num_experts: int, block_t: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-expert token lists without a host sync.

    Returns ``pairs[min(E, B*K) * block_t]`` (flat pair index ``token*K + slot``, padded with
    ``B*K``) and ``experts[min(E, B*K)]`` (expert id of each slot, ``-1`` when unused).
    """
    flat = topk_ids.reshape(-1).to(torch.int64)
    num_pairs = flat.numel()
    slots = min(num_experts, num_pairs)
    dev = flat.device
    # scatter_add, not bincount: bincount reads the max back to the host (no graph capture)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    touched = counts > 0
    slot_of = torch.cumsum(touched.to(torch.int64), 0) - 1
    _, order = torch.sort(flat, stable=True)
    sorted_e = flat[order]
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_pairs, device=dev) - start[sorted_e]
    pairs = torch.full((slots * block_t + 1,), num_pairs, dtype=torch.int32, device=dev)
    pairs.scatter_(0, slot_of[sorted_e] * block_t + rank, order.to(torch.int32))
    experts = torch.full((slots + 1,), -1, dtype=torch.int32, device=dev)
    dest = torch.where(touched, slot_of, torch.full_like(slot_of, slots))
    experts.scatter_(0, dest, torch.arange(num_experts, dtype=torch.int32, device=dev))
    # the extra last entry absorbed untouched experts' writes
    return pairs[: slots * block_t], experts[:slots]


def block_sizes(experts: FusedExperts, batch: int) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_K): tokens per expert <= batch (top-k experts are distinct)."""
    return max(16, triton.next_power_of_2(batch)), min(64, experts.group_size)


# Enough programs to keep every SM of a large GPU (132 on an H100) streaming memory.
TARGET_PROGRAMS = 512


def pick_block_n(slots: int, n: int) -> int:
    """The widest output tile (64, 32 or 16) that still gives ``TARGET_PROGRAMS`` programs.

    Decode grids are small (8 experts x I/64 = 96 programs at batch 1 for Qwen3-30B-A3B):
    narrower tiles trade a little reuse of the token block for memory-level parallelism.
    """
    for bn in (64, 32):
        if slots * triton.cdiv(n, bn) >= TARGET_PROGRAMS:
            return bn
    return 16


def moe_fused_triton(
    x: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_weights: torch.Tensor,
    experts: FusedExperts,
    *,
    validate: bool = True,
    block_n: int | None = None,
) -> torch.Tensor:
    """Fused W4A16 MoE layer; returns ``[B, H]`` in ``x.dtype``.

    A token's top-k experts must be distinct (a router's top-k always is): an expert then has
    at most B tokens, which sizes the per-expert token block. ``validate`` checks it (a host
    sync; skipped while a CUDA graph is being captured). ``block_n`` fixes the output tile
    width (default: :func:`pick_block_n` per launch on a GPU, 64 in the interpreter, where
    every program costs CPU time).
    """
    batch, topk = topk_ids.shape
    capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
    if validate and not capturing and topk > 1:
        ids = topk_ids.sort(dim=1).values
        if bool((ids[:, 1:] == ids[:, :-1]).any()):
            raise ValueError("a token routes to the same expert twice: top-k ids must be distinct")
    hidden, inter, g = experts.hidden, experts.intermediate, experts.group_size
    block_t, block_k = block_sizes(experts, batch)
    if g % block_k or hidden % block_k or inter % block_k:
        raise ValueError(f"H={hidden}, INTER={inter}, group={g} must be multiples of {block_k}")
    pairs, slot_experts = align_routing(topk_ids, experts.num_experts, block_t)
    num_pairs = batch * topk
    cdt = torch.float32 if interpreting() else x.dtype
    x = x.contiguous()
    h = torch.empty((num_pairs, inter), dtype=cdt, device=x.device)
    out = torch.empty((num_pairs, hidden), dtype=torch.float32, device=x.device)
    weights = topk_weights.to(torch.float32).contiguous()
    slots = slot_experts.shape[0]
    if block_n is not None:
        bn_up = bn_down = block_n
    elif interpreting():
        bn_up = bn_down = 64
    else:
        bn_up, bn_down = pick_block_n(slots, inter), pick_block_n(slots, hidden)
    _gate_up_kernel[(slots, triton.cdiv(inter, bn_up))](
        x, experts.w13_q, experts.w13_z, experts.w13_s, pairs, slot_experts, h,
        hidden, inter, num_pairs,
        TOPK=topk, GROUP=g, BLOCK_T=block_t, BLOCK_N=bn_up, BLOCK_K=block_k,
    )  # fmt: skip
    _down_kernel[(slots, triton.cdiv(hidden, bn_down))](
        h, experts.w2_q, experts.w2_z, experts.w2_s, pairs, slot_experts, weights, out,
        hidden, inter, num_pairs,
        GROUP=g, BLOCK_T=block_t, BLOCK_N=bn_down, BLOCK_K=block_k,
    )  # fmt: skip
    return out.view(batch, topk, hidden).sum(1).to(x.dtype)
