"""Module-path helpers shared by the tracer and the profile attribution (no torch import)."""

from __future__ import annotations

import re

_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)(?:\.|$)")


def layer_of(module: str) -> int | None:
    """The decoder layer index in a module path ('model.layers.3.mlp' -> 3), else None."""
    match = _LAYER.search(module or "")
    return int(match.group(1)) if match else None


def is_layer_root(module: str) -> bool:
    """True for the decoder layer module itself ('model.layers.3'), not its children."""
    match = _LAYER.search(module or "")
    return bool(match) and match.end() == len(module)
