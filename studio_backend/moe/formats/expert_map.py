"""Expert map JSON (vllm-ascend ``expert_map_record_path`` / MindIE ``eplb_expert_map_file``).

``{"moe_layer_count": L, "layer_list": [{"layer_id", "device_count", "device_list":
[{"device_id", "device_expert": [logical expert of each local slot]}]}]}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError
from studio_backend.moe.placement import Placement, from_device_lists, to_device_lists


def parse(data: Any, path: str | Path) -> Placement:
    """Validate an expert map object and return its placement (layers in layer_id order)."""
    if not isinstance(data, dict):
        raise InputError(path, "expert map must be a JSON object")
    count, layer_list = data.get("moe_layer_count"), data.get("layer_list")
    if not isinstance(count, int) or count < 1:
        raise InputError(path, "moe_layer_count must be a positive integer")
    if not isinstance(layer_list, list) or len(layer_list) != count:
        raise InputError(path, f"layer_list must be a list of moe_layer_count={count} entries")
    by_id: dict[int, list[list[int]]] = {}
    for i, layer in enumerate(layer_list):
        if not isinstance(layer, dict) or not isinstance(layer.get("layer_id"), int):
            raise InputError(path, f"layer_list[{i}] needs an integer layer_id")
        devices = layer.get("device_list")
        if not isinstance(devices, list) or len(devices) != layer.get("device_count"):
            raise InputError(path, f"layer_list[{i}]: device_list length != device_count")
        lists = []
        for j, dev in enumerate(devices):
            experts = dev.get("device_expert") if isinstance(dev, dict) else None
            if not isinstance(experts, list) or not all(
                isinstance(e, int) and e >= 0 for e in experts
            ):
                raise InputError(
                    path,
                    f"layer_list[{i}].device_list[{j}].device_expert must list expert ids >= 0",
                )
            lists.append(experts)
        by_id[layer["layer_id"]] = lists
    for layer_id, lists in by_id.items():
        ids = {e for dev in lists for e in dev}
        if ids and ids != set(range(max(ids) + 1)):
            missing = sorted(set(range(max(ids) + 1)) - ids)
            raise InputError(
                path,
                f"layer {layer_id}: expert ids must be 0..E-1 with every expert placed at least "
                f"once; the largest id is {max(ids)} but {len(missing)} id(s) below it are "
                f"never placed (e.g. {missing[:5]})",
            )
    try:
        return from_device_lists([by_id[k] for k in sorted(by_id)])
    except ValueError as exc:
        raise InputError(path, str(exc)) from exc


def read(path: str | Path) -> Placement:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(p, f"not readable JSON ({exc})") from exc
    return parse(data, p)


def dumps(placement: Placement) -> str:
    """Write a placement in the same format (round-trips through ``parse``)."""
    layers = to_device_lists(placement)
    record = {
        "moe_layer_count": len(layers),
        "layer_list": [
            {
                "layer_id": i,
                "device_count": len(devs),
                "device_list": [
                    {"device_id": d, "device_expert": experts} for d, experts in enumerate(devs)
                ],
            }
            for i, devs in enumerate(layers)
        ],
    }
    return json.dumps(record, indent=4)
