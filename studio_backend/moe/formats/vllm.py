"""vLLM / vllm-ascend expert-load tensors saved with ``torch.save``.

Accepted: a tensor ``[layers, experts]`` (one snapshot: vLLM ``expert_load_pass``), ``[steps,
layers, experts]`` (vLLM ``expert_load_window``), or a dict holding one of them under
``expert_load``, ``expert_load_pass``, ``expert_load_window`` or ``moe_load`` (vllm-ascend's
gathered ``moe_load`` is ``[layers, ranks, local experts]``), with an optional
``physical_to_logical_map [layers, physical]``. Layer indices are MoE-layer indices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from studio_backend.errors import InputError
from studio_backend.moe.formats.common import int_tensor, load_pt
from studio_backend.moe.placement import Placement, contiguous
from studio_backend.moe.records import ALL_RANKS, LoadSet, slot_counts

KEYS = ("expert_load", "expert_load_pass", "expert_load_window", "moe_load")


def read(
    path: str | Path, num_devices: int | None = None, placement: Placement | None = None
) -> LoadSet:
    p = Path(path)
    data = load_pt(p)
    p2l = None
    key = None
    if isinstance(data, dict):
        key = next((k for k in KEYS if k in data), None)
        if key is None:
            raise InputError(p, f"dict holds none of the keys {', '.join(KEYS)}")
        if "physical_to_logical_map" in data:
            p2l = int_tensor(data["physical_to_logical_map"], p, "physical_to_logical_map", 2)
        data = data[key]
    t = int_tensor(data, p, key or "tensor", (2, 3))
    if key == "moe_load":
        if t.ndim != 3:
            raise InputError(p, "moe_load must be [layers, ranks, local experts]")
        ndev = t.shape[1]
        arr = t.reshape(t.shape[0], -1).unsqueeze(0).numpy()
    else:
        arr = (t.unsqueeze(0) if t.ndim == 2 else t).numpy()
        ndev = num_devices or (placement.num_devices if placement else 1)
    n_layers, n_slots = arr.shape[1], arr.shape[2]
    if placement is None:
        if p2l is not None:
            m = p2l.numpy()
            if m.shape != (n_layers, n_slots):
                raise InputError(
                    p,
                    f"physical_to_logical_map shape {list(m.shape)} != load {[n_layers, n_slots]}",
                )
            dev = np.tile(np.arange(n_slots) // max(1, n_slots // ndev), (n_layers, 1))
            placement = Placement(m, np.minimum(dev, ndev - 1), ndev)
        else:
            placement = contiguous(n_layers, n_slots, ndev)
    elif placement.slot_expert.shape != (n_layers, n_slots):
        raise InputError(
            p,
            f"expert map has {list(placement.slot_expert.shape)} layer x slots, load has {[n_layers, n_slots]}",
        )
    df = slot_counts(arr, placement, rank=ALL_RANKS)
    n_experts = int(placement.slot_expert.max()) + 1
    return LoadSet("vllm", str(p), df, n_experts, placement.num_devices, meta={"key": key})


def save_fixture(path: Path, load: torch.Tensor) -> None:
    """Write a load tensor the way vLLM code would (used by tests and docs)."""
    torch.save(load, str(path))
