"""Split fused projections into their parts using the model config's head counts.

``qkv_proj`` output (stitched, unsharded) is ``[Q | K | V]`` with ``Q = heads * head_dim`` and
``K = V = kv_heads * head_dim``; ``gate_up_proj`` output is ``[gate | up]`` in equal halves
(REFERENCE.md section 2). Inputs of these modules are not fused and have no parts.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from studio_backend.errors import InputError

FUSED = {"qkv_proj": ("q", "k", "v"), "gate_up_proj": ("gate", "up")}


def parts_of(module: str, io: str) -> tuple[str, ...]:
    """The parts a module's tensor splits into (empty when it is not fused)."""
    if io != "output":
        return ()
    leaf = module.rsplit(".", 1)[-1]
    return FUSED.get(leaf, ())


def _head_dim(config: Mapping) -> int:
    if config.get("head_dim"):
        return int(config["head_dim"])
    try:
        return int(config["hidden_size"]) // int(config["num_attention_heads"])
    except KeyError as exc:
        raise InputError("config.json", f"needs head_dim or hidden_size ({exc} missing)") from None


def part_sizes(module: str, config: Mapping, width: int) -> dict[str, tuple[int, int]]:
    """``{part: (start, stop)}`` channel ranges of a fused output of ``width`` channels."""
    leaf = module.rsplit(".", 1)[-1]
    if leaf == "qkv_proj":
        hd = _head_dim(config)
        try:
            q = int(config["num_attention_heads"]) * hd
            kv = int(config.get("num_key_value_heads") or config["num_attention_heads"]) * hd
        except KeyError as exc:
            raise InputError("config.json", f"missing {exc} to split qkv_proj") from None
        if q + 2 * kv != width:
            raise InputError(
                module, f"output has {width} channels, config gives Q {q} + K {kv} + V {kv}"
            )
        return {"q": (0, q), "k": (q, q + kv), "v": (q + kv, q + 2 * kv)}
    if leaf == "gate_up_proj":
        if width % 2:
            raise InputError(module, f"gate_up output has an odd width {width}")
        return {"gate": (0, width // 2), "up": (width // 2, width)}
    raise InputError(module, "is not a fused qkv_proj / gate_up_proj module")


def split(module: str, tensor: torch.Tensor, config: Mapping, part: str) -> torch.Tensor:
    """The ``part`` slice of a fused output along its last dimension."""
    ranges = part_sizes(module, config, int(tensor.shape[-1]))
    if part not in ranges:
        raise InputError(module, f"has no part {part!r} (parts: {', '.join(ranges)})")
    lo, hi = ranges[part]
    return tensor[..., lo:hi]
