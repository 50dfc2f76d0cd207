"""The fp64 numpy oracle of a W4A16 MoE layer, independent of the torch and Triton code.

It unpacks AWQ words with its own bit loop (REFERENCE.md section 7), dequantizes in float64 and
evaluates ``sum_k w_k * down_e(silu(x @ gate_e) * (x @ up_e))`` token by token.
"""

from __future__ import annotations

import numpy as np
import torch

from studio_kernels.experts import AwqExperts

_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _unpack(words: np.ndarray) -> np.ndarray:
    u = words.astype(np.int64) & 0xFFFFFFFF
    out = np.empty((*words.shape[:-1], words.shape[-1] * 8), dtype=np.int64)
    for nibble, col in enumerate(_ORDER):
        out[..., col::8] = (u >> (4 * nibble)) & 0xF
    return out


def dequantize(q: torch.Tensor, z: torch.Tensor, s: torch.Tensor, group: int) -> np.ndarray:
    """``(q - z) * s`` as float64 ``[K, N]`` from AWQ tensors of one weight."""
    qv = _unpack(q.cpu().numpy())
    zv = np.repeat(_unpack(z.cpu().numpy()), group, axis=0)
    sv = np.repeat(s.cpu().float().numpy().astype(np.float64), group, axis=0)
    return (qv - zv) * sv


def moe_oracle(
    x: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor, experts: AwqExperts
) -> np.ndarray:
    """float64 ``[B, H]`` output of the MoE layer for the given routing.

    Walks the touched experts one at a time (only one expert's float64 weights alive), and
    for each routed token adds ``w * down(silu(x @ gate) * (x @ up))``.
    """
    xs = x.cpu().float().numpy().astype(np.float64)
    ids = topk_ids.cpu().numpy()
    wts = topk_weights.cpu().float().numpy().astype(np.float64)
    g = experts.group_size
    out = np.zeros((xs.shape[0], experts.hidden), dtype=np.float64)
    for e in np.unique(ids):
        wg, wu, wd = (dequantize(*experts.weight(n, int(e)), g) for n in ("gate", "up", "down"))
        for b, k in zip(*np.nonzero(ids == e), strict=True):
            gate, up = xs[b] @ wg, xs[b] @ wu
            h = gate / (1.0 + np.exp(-gate)) * up
            out[b] += wts[b, k] * (h @ wd)
    return out


def relative_error(actual: torch.Tensor | np.ndarray, oracle: np.ndarray) -> float:
    """Normwise relative error ``max|a - o| / max|o|`` (robust to outputs near zero)."""
    a = actual.cpu().float().numpy() if isinstance(actual, torch.Tensor) else actual
    scale = float(np.abs(oracle).max()) or 1.0
    return float(np.abs(a.astype(np.float64) - oracle).max() / scale)
