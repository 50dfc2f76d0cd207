"""The one shape every expert-load reader returns: counts per (step, rank, layer, slot)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from studio_backend.moe.placement import Placement

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
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        # An int64 cast would store inf as INT64_MIN: refuse it here, with the reader's name.
        raise ValueError("expert counts must be finite numbers (found inf or NaN)")
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


def validate(load: LoadSet) -> None:
    """Refuse a LoadSet no display could show truthfully (checked before anything is stored)."""
    from studio_backend.errors import InputError

    where = load.path or load.kind
    if not isinstance(load.num_experts, int | np.integer) or load.num_experts < 1:
        raise InputError(where, f"number of experts must be >= 1, got {load.num_experts}")
    if not isinstance(load.num_devices, int | np.integer) or load.num_devices < 1:
        raise InputError(where, f"number of devices must be >= 1, got {load.num_devices}")
    if load.top_k is not None and not 1 <= load.top_k <= load.num_experts:
        raise InputError(
            where, f"top-k {load.top_k} is outside 1..{load.num_experts} (the number of experts)"
        )
    c = load.counts
    if c is None or len(c) == 0:
        raise InputError(where, "holds no expert counts")
    count = c["count"].to_numpy()
    if not np.issubdtype(count.dtype, np.number) or not np.isfinite(count.astype(float)).all():
        raise InputError(where, "expert counts must be finite numbers (found inf or NaN)")
    if (count < 0).any():
        raise InputError(where, f"expert counts must be >= 0 (found {count.min()})")
    if not count.any():
        raise InputError(where, "every expert count is 0: the source holds no routed tokens")
    for col, limit, what in (
        ("expert", load.num_experts, "expert id"),
        ("device", load.num_devices, "device"),
    ):
        v = c[col].to_numpy()
        if len(v) and (v.min() < 0 or v.max() >= limit):
            raise InputError(
                where,
                f"{what} {int(v.max() if v.max() >= limit else v.min())} is outside 0..{limit - 1}",
            )
    if load.tokens is not None and len(load.tokens):
        e = load.tokens["expert"].to_numpy()
        if e.min() < 0 or e.max() >= load.num_experts:
            raise InputError(
                where, f"a routed token names expert {int(e.max())} of {load.num_experts}"
            )
