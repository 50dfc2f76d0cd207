"""What every reader returns: references to tensor files, and a safe tensor loader."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from backend.errors import InputError

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def layer_of(module: str) -> int | None:
    """The decoder layer index in a module path ('model.layers.3.mlp' -> 3), or None."""
    m = _LAYER.search(module)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class TensorRef:
    """One tensor file of a dump, located by (rank folder, step, module, io, idx)."""

    path: Path
    rank_folder: str
    step: int
    module: str
    io: str  # 'input' | 'output'
    idx: int
    arg_name: str | None = None
    call_index: int = 0
    module_class: str | None = None
    kind: str = "module"  # 'module' | 'api'


@dataclass
class RankFolder:
    """A rank's folder of a dump (msit ``npu0_1234``, msprobe ``rank1`` / ``proc42``)."""

    folder: str
    path: Path
    device: str | None
    device_id: int | None
    pid: int | None
    rank: int | None = None  # given by the folder name itself (msprobe rank<R>)
    classes: dict[str, str] = field(default_factory=dict)  # module -> class name


def load_tensor_file(path: Path, mmap: bool = True) -> torch.Tensor:
    """Load one dumped tensor with ``weights_only=True``; anything but a plain tensor is refused."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - every failure is a bad file for the user
        text = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise InputError(
                path, f"not a plain tensor file (refused unsafe pickle: {text})"
            ) from exc
        raise InputError(path, f"unreadable or truncated tensor file ({text})") from exc
    if not isinstance(obj, torch.Tensor):
        raise InputError(path, f"holds a {type(obj).__name__}, not a tensor")
    return obj
