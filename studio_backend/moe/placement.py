"""Which device holds which expert: contiguous by default, or an expert map.

A placement maps each layer's physical slots to (device, logical expert). Slots are numbered
device-major, as every engine does: slot = device * slots_per_device + local index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Placement:
    """``slot_expert[layer, slot]`` logical expert, ``slot_device[layer, slot]`` its device."""

    slot_expert: np.ndarray
    slot_device: np.ndarray
    num_devices: int

    @property
    def num_layers(self) -> int:
        return int(self.slot_expert.shape[0])

    @property
    def num_slots(self) -> int:
        return int(self.slot_expert.shape[1])

    def device_load(self, slot_load: np.ndarray) -> np.ndarray:
        """Sum ``slot_load[..., layer, slot]`` per device -> ``[..., layer, device]``."""
        load = np.asarray(slot_load)
        out = np.zeros((*load.shape[:-1], self.num_devices), dtype=np.float64)
        for d in range(self.num_devices):
            mask = self.slot_device == d  # [layer, slot]
            out[..., d] = (load * mask).sum(axis=-1)
        return out

    def expert_load(self, slot_load: np.ndarray, num_experts: int) -> np.ndarray:
        """Sum replicas of the same logical expert -> ``[..., layer, expert]``."""
        load = np.asarray(slot_load, dtype=np.float64)
        out = np.zeros((*load.shape[:-1], num_experts), dtype=np.float64)
        for layer in range(self.num_layers):
            for slot in range(self.num_slots):
                out[..., layer, self.slot_expert[layer, slot]] += load[..., layer, slot]
        return out


def contiguous(num_layers: int, num_experts: int, num_devices: int) -> Placement:
    """Seed 001 default: device d holds experts ``[d*c, (d+1)*c)`` with ``c = ceil(E/ndev)``."""
    if num_devices < 1:
        raise ValueError("num_devices must be >= 1")
    per = math.ceil(num_experts / num_devices)
    experts = np.arange(num_experts)
    devices = np.minimum(experts // per, num_devices - 1)
    return Placement(
        slot_expert=np.tile(experts, (num_layers, 1)),
        slot_device=np.tile(devices, (num_layers, 1)),
        num_devices=num_devices,
    )


def from_device_lists(layers: list[list[list[int]]]) -> Placement:
    """``layers[l][d]`` = logical experts of device d in local slot order (expert map JSON)."""
    if not layers:
        raise ValueError("no layers")
    ndev = len(layers[0])
    widths = {len(dev) for layer in layers for dev in layer}
    if any(len(layer) != ndev for layer in layers) or len(widths) != 1:
        raise ValueError("every layer must list the same number of devices and slots per device")
    width = widths.pop()
    slot_expert = np.array([[e for dev in layer for e in dev] for layer in layers], dtype=np.int64)
    slot_device = np.tile(np.repeat(np.arange(ndev), width), (len(layers), 1))
    return Placement(slot_expert=slot_expert, slot_device=slot_device, num_devices=ndev)


def to_device_lists(p: Placement) -> list[list[list[int]]]:
    """Inverse of ``from_device_lists``."""
    return [
        [
            [int(e) for e in p.slot_expert[layer][p.slot_device[layer] == d]]
            for d in range(p.num_devices)
        ]
        for layer in range(p.num_layers)
    ]
