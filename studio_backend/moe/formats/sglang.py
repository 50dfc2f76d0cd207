"""SGLang expert-distribution recorder dumps (``python/sglang/srt/eplb/expert_distribution.py``).

``stat``/``stat_approx``: ``{"rank", "logical_count": [steps, layers, logical experts],
"average_utilization_rate_over_window"}`` (already all-reduced over ranks).
``per_pass``/``per_token``: ``{"records": [{"forward_pass_id", "rank", "gatherer_key",
"global_physical_count": [layers, physical], ...}], "last_physical_to_logical_map":
[layers, physical]}``; per_token records add ``input_ids, positions, extend_seq_lens,
forward_mode, topk_ids_of_layer [layers, tokens, topk]`` (physical ids, -1 = padding).
SGLang counts every model layer (dense layers stay zero); those all-zero layers are dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from studio_backend.errors import InputError
from studio_backend.moe.formats.common import int_tensor, load_pt
from studio_backend.moe.placement import Placement, contiguous
from studio_backend.moe.records import ALL_RANKS, LoadSet, slot_counts


def _nonzero_layers(arr: np.ndarray) -> np.ndarray:
    """Layers with any count (axis 1 of ``[steps, layers, slots]``)."""
    return np.flatnonzero(arr.sum(axis=(0, 2)) > 0)


def read(path: str | Path, num_devices: int | None = None) -> LoadSet:
    p = Path(path)
    data = load_pt(p)
    if not isinstance(data, dict):
        raise InputError(p, "expected a dict saved by SGLang's expert distribution recorder")
    if "logical_count" in data:
        return _read_stat(p, data, num_devices or 1)
    if "records" in data:
        return _read_records(p, data, num_devices)
    raise InputError(p, "neither 'logical_count' (stat mode) nor 'records' (per_pass/per_token)")


def _read_stat(p: Path, data: dict, ndev: int) -> LoadSet:
    counts = int_tensor(data["logical_count"], p, "logical_count", 3).numpy()
    steps = np.flatnonzero(counts.sum(axis=(1, 2)) > 0)  # circular buffer: unused rows are zero
    layers = _nonzero_layers(counts)
    arr = counts[steps][:, layers]
    n_experts = counts.shape[2]
    placement = contiguous(len(layers), n_experts, ndev)
    df = slot_counts(arr, placement, rank=ALL_RANKS, steps=steps, layers=layers)
    return LoadSet("sglang-stat", str(p), df, n_experts, ndev, meta={"dump_rank": data.get("rank")})


def _placement_from_map(p: Path, data: dict, layers: np.ndarray, ndev: int) -> Placement:
    m = data.get("last_physical_to_logical_map")
    m = int_tensor(m, p, "last_physical_to_logical_map", 2).numpy()[layers]
    n_phys = m.shape[1]
    if n_phys % ndev:
        raise InputError(p, f"{n_phys} physical experts do not split over {ndev} devices")
    device = np.tile(np.arange(n_phys) // (n_phys // ndev), (len(layers), 1))
    return Placement(slot_expert=m, slot_device=device, num_devices=ndev)


def _read_records(p: Path, data: dict, ndev: int | None) -> LoadSet:
    records = data["records"]
    if not isinstance(records, list) or not records:
        raise InputError(p, "'records' is empty: nothing was recorded")
    arrs, steps, ranks = [], [], []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "global_physical_count" not in rec:
            raise InputError(p, f"records[{i}] has no global_physical_count")
        arrs.append(int_tensor(rec["global_physical_count"], p, f"records[{i}]", 2).numpy())
        steps.append(int(rec.get("forward_pass_id", i)))
        ranks.append(int(rec.get("rank", 0)))
    if len({a.shape for a in arrs}) != 1:
        raise InputError(p, "records have different global_physical_count shapes")
    full = np.stack(arrs)
    ndev = ndev or (max(ranks) + 1)
    layers = _nonzero_layers(full)
    placement = _placement_from_map(p, data, layers, ndev)
    df = slot_counts(
        full[:, layers], placement, rank=np.array(ranks), steps=np.array(steps), layers=layers
    )
    n_experts = int(placement.slot_expert.max()) + 1
    kind = "sglang-per_pass"
    tokens = None
    if "topk_ids_of_layer" in records[0]:
        kind = "sglang-per_token"
        tokens = _tokens(p, records, steps, placement, layers)
    top_k = int(tokens["k"].max()) + 1 if tokens is not None and len(tokens) else None
    return LoadSet(kind, str(p), df, n_experts, ndev, top_k=top_k, tokens=tokens)


def _tokens(
    p: Path, records: list, steps: list[int], placement: Placement, layers: np.ndarray
) -> pd.DataFrame:
    frames = []
    layer_pos = {int(layer): i for i, layer in enumerate(layers)}
    for i, rec in enumerate(records):
        ids = int_tensor_allow_pad(rec["topk_ids_of_layer"], p, f"records[{i}].topk_ids_of_layer")
        n_layers, n_tok, k = ids.shape
        li, ti, ki = np.meshgrid(np.arange(n_layers), np.arange(n_tok), np.arange(k), indexing="ij")
        phys = ids.reshape(-1)
        keep = (phys >= 0) & np.isin(li.reshape(-1), layers)
        li, ti, ki, phys = (
            li.reshape(-1)[keep],
            ti.reshape(-1)[keep],
            ki.reshape(-1)[keep],
            phys[keep],
        )
        row = np.array([layer_pos[int(x)] for x in li], dtype=np.int64)
        input_ids = np.asarray(rec.get("input_ids") or [-1] * n_tok)
        positions = np.asarray(rec.get("positions") or [-1] * n_tok)
        frames.append(
            pd.DataFrame(
                {
                    "step": steps[i],
                    "token": ti,
                    "layer": li,
                    "k": ki,
                    "expert": placement.slot_expert[row, phys] if len(row) else phys,
                    "weight": np.nan,
                    "input_id": input_ids[ti],
                    "position": positions[ti],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def int_tensor_allow_pad(obj: object, p: Path, what: str) -> np.ndarray:
    import torch

    if not isinstance(obj, torch.Tensor) or obj.ndim != 3 or obj.is_floating_point():
        raise InputError(p, f"{what} must be an integer tensor [layers, tokens, topk]")
    return obj.to(torch.int64).numpy()
