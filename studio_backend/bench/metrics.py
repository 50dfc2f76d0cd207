"""Bytes and FLOPs of a decode MoE layer (REFERENCE.md section 7)."""

from __future__ import annotations

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def expert_bytes(
    hidden: int,
    intermediate: int,
    group_size: int,
    bits: int = 4,
    scale_bytes: float = 2.0,
    zero_bytes: float = 0.5,
) -> float:
    """``W_e = 3*H*I*(bits/8 + s/G + z/G)``: one expert's gate, up and down weights."""
    return (
        3 * hidden * intermediate * (bits / 8 + scale_bytes / group_size + zero_bytes / group_size)
    )


def min_layer_bytes(
    batch: int,
    topk: int,
    hidden: int,
    intermediate: int,
    group_size: int,
    experts_touched: float,
    act_bytes: int = 2,
    zero_bytes: float = 0.5,
) -> float:
    """``E_t*W_e + B*H*(a_in + a_out) + 8*B*K``: the least a fused decode layer must move.

    ``zero_bytes`` per group: 0.5 for AWQ's packed int4 zeros (2 if stored as fp16).
    """
    w_e = expert_bytes(hidden, intermediate, group_size, zero_bytes=zero_bytes)
    return experts_touched * w_e + batch * hidden * (2 * act_bytes) + 8 * batch * topk


def reference_layer_bytes(
    batch: int,
    topk: int,
    hidden: int,
    intermediate: int,
    group_size: int,
    experts_touched: float,
    act_bytes: int = 2,
) -> float:
    """What the dequantize-to-memory path moves: int4 read + fp16 write + fp16 read per weight."""
    per_weight = 3 * hidden * intermediate
    dequant = experts_touched * (
        expert_bytes(hidden, intermediate, group_size) + 2 * per_weight * act_bytes
    )
    return dequant + batch * hidden * (2 * act_bytes) + 8 * batch * topk


def layer_flops(batch: int, topk: int, hidden: int, intermediate: int) -> float:
    """Multiply-adds x 2 of gate, up and down for every (token, expert) pair."""
    return 2.0 * batch * topk * 3 * hidden * intermediate
