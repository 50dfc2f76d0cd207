"""The one shape every expert-load reader returns: counts per (step, rank, layer, slot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backend.moe.placement import Placement

COLUMNS = ["step", "rank", "layer", "slot", "device", "expert", "count"]
ALL_RANKS = -1  # the count was already summed over ranks by the engine


@dataclass
class LoadSet:
    """Expert load read from one source; ``counts`` has ``COLUMNS``."""

    kind: str
    path: str
    counts: pd.DataFrame
    num_experts: int
    num_devices: int
    top_k: int | None = None
    tokens: pd.DataFrame | None = None  # step, token, layer, k, expert, weight, input_id, position
    meta: dict[str, Any] = field(default_factory=dict)


def slot_counts(
    arr: np.ndarray,
    placement: Placement,
    *,
    rank: int | np.ndarray = ALL_RANKS,
    steps: np.ndarray | None = None,
    layers: np.ndarray | None = None,
) -> pd.DataFrame:
    """Long rows from ``arr[step, layer, slot]`` (vectorised; placement gives device/expert)."""
    a = np.asarray(arr)
    if a.ndim != 3:
        raise ValueError(f"expected [steps, layers, slots], got shape {a.shape}")
    s, n_layers, n_slots = a.shape
    steps = np.arange(s) if steps is None else np.asarray(steps)
    layer_ids = np.arange(n_layers) if layers is None else np.asarray(layers)
    step_col = np.repeat(steps, n_layers * n_slots)
    layer_idx = np.tile(np.repeat(np.arange(n_layers), n_slots), s)
    slot_col = np.tile(np.arange(n_slots), s * n_layers)
    rank_col = (
        np.full(a.size, rank, dtype=np.int64)
        if np.isscalar(rank)
        else np.repeat(np.asarray(rank), n_layers * n_slots)
    )
    return pd.DataFrame(
        {
            "step": step_col.astype(np.int32),
            "rank": rank_col.astype(np.int32),
            "layer": layer_ids[layer_idx].astype(np.int32),
            "slot": slot_col.astype(np.int32),
            "device": placement.slot_device[layer_idx, slot_col].astype(np.int32),
            "expert": placement.slot_expert[layer_idx, slot_col].astype(np.int32),
            "count": a.reshape(-1).astype(np.int64),
        }
    )
