"""What every reader returns: references to tensor files, and a safe tensor loader."""

from __future__ import annotations

import pickle
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from backend.dumps.formats.torch_zip import FileEnds, mmap_plain_tensor
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


def _load(path: Path, mmap: bool, ends: FileEnds | None) -> object:
    if mmap:
        try:
            t = mmap_plain_tensor(path, ends)
        except (OSError, RuntimeError, ValueError, struct.error):
            t = None  # torch.load below says what is wrong with the file
        if t is not None:
            return t
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as exc:
        if mmap and "mmap can only be used" in str(exc):  # legacy (non-zip) torch.save format
            return torch.load(str(path), map_location="cpu", weights_only=True)
        raise


def load_tensor_file(path: Path, mmap: bool = True, ends: FileEnds | None = None) -> torch.Tensor:
    """Load one dumped tensor with ``weights_only=True``; anything but a plain tensor is refused.

    ``ends``: the file's first and last bytes when the caller has read them already.
    """
    try:
        obj = _load(path, mmap, ends)
    except Exception as exc:  # noqa: BLE001 - every failure is a bad file for the user
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
            glob = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+)", text)
            why = glob.group(1) if glob else "it holds objects other than tensors"
            raise InputError(
                path, f"not a plain tensor file (refused unsafe pickle: {why})"
            ) from exc
        first = text.splitlines()[0][:300] if text else type(exc).__name__
        raise InputError(path, f"unreadable or truncated tensor file ({first})") from exc
    if not isinstance(obj, torch.Tensor):
        raise InputError(path, f"holds a {type(obj).__name__}, not a tensor")
    return obj
