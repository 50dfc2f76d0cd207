"""What every reader returns: references to tensor files, and a safe tensor loader."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio_backend.dumps.formats.torch_zip import FileEnds, mmap_plain_tensor
from studio_backend.errors import InputError

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
    # Where the tensor lies inside a container file (SGLang's Pass dicts, dumper records);
    # None: the file IS the tensor.
    member: Member | None = None

    @property
    def source(self) -> str:
        """The address the tensor is loaded from (``source_file`` in the workspace)."""
        return str(self.path) if self.member is None else self.member.address(self.path)


@dataclass(frozen=True)
class Member:
    """A tensor inside a container file: ``obj[key][i][j]...``, optionally reshaped to ``view``.

    ``view`` only regroups a dimension (same elements, same order), e.g. SGLang's per-head
    ``q_norm`` output ``[tokens*heads, head_dim]`` shown as ``[tokens, heads, head_dim]``.
    """

    key: str
    index: tuple[int, ...] = ()
    view: tuple[int, ...] | None = None

    def address(self, path: Path) -> str:
        spec = [self.key, list(self.index), list(self.view) if self.view is not None else None]
        return f"{path}{_MEMBER_TAG}{json.dumps(spec, separators=(',', ':'))}"


_MEMBER_TAG = "#member="


def split_source(source: str) -> tuple[Path, Member | None]:
    """(file, member) of a ``source_file`` address; plain paths have no member."""
    cut = source.rfind(_MEMBER_TAG)
    if cut < 0 or os.path.exists(source):
        return Path(source), None
    try:
        key, index, view = json.loads(source[cut + len(_MEMBER_TAG) :])
        member = Member(str(key), tuple(int(i) for i in index),
                        tuple(int(v) for v in view) if view is not None else None)  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise InputError(source, f"malformed tensor address ({exc})") from exc
    return Path(source[:cut]), member


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


_CACHE_LOCK = threading.Lock()
_CONTAINERS: OrderedDict[tuple[str, int, int], Any] = OrderedDict()
_CACHE_FILES = 32  # memory-mapped: a cached file costs address space, not memory


def load_container(path: Path) -> Any:
    """A container file (dict / list of tensors) with ``weights_only=True``, memory-mapped.

    The last few files are kept: one SGLang ``Pass*.pt`` holds every module's output, and its
    tensors are read one by one (catalog, stitch, statistics) without unpickling it each time.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from exc
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _CACHE_LOCK:
        if key in _CONTAINERS:
            _CONTAINERS.move_to_end(key)
            return _CONTAINERS[key]
    try:
        obj = _load(path, True, None)
    except Exception as exc:  # noqa: BLE001 - every failure is a bad file for the user
        text = str(exc)
        if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
            glob = re.search(r"(Unsupported global: GLOBAL [\w.]+|Unsupported operand \d+)", text)
            why = glob.group(1) if glob else "it holds objects other than tensors and containers"
            raise InputError(path, f"refused unsafe pickle ({why})") from exc
        first = text.splitlines()[0][:300] if text else type(exc).__name__
        raise InputError(path, f"unreadable or truncated file ({first})") from exc
    with _CACHE_LOCK:
        _CONTAINERS[key] = obj
        while len(_CONTAINERS) > _CACHE_FILES:
            _CONTAINERS.popitem(last=False)
    return obj


def resolve_member(obj: Any, member: Member, path: Path) -> torch.Tensor:
    """The tensor a ``Member`` names inside a loaded container; a clear error otherwise."""
    if not isinstance(obj, dict) or member.key not in obj:
        raise InputError(path, f"holds no entry {member.key!r}")
    t = obj[member.key]
    for i in member.index:
        if not isinstance(t, list | tuple) or not -len(t) <= i < len(t):
            raise InputError(path, f"entry {member.key!r} has no item {list(member.index)}")
        t = t[i]
    if not isinstance(t, torch.Tensor):
        raise InputError(path, f"entry {member.key!r} holds a {type(t).__name__}, not a tensor")
    if member.view is not None:
        if t.numel() != _prod(member.view):
            raise InputError(path, f"entry {member.key!r} of shape {list(t.shape)} cannot be "
                                   f"viewed as {list(member.view)}")  # fmt: skip
        t = t.reshape(member.view)
    return t


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def load_source(source: str | Path, mmap: bool = True) -> torch.Tensor:
    """Load a tensor by its ``source_file`` address: a tensor file or a container member."""
    path, member = split_source(str(source))
    if member is None:
        return load_tensor_file(path, mmap=mmap)
    return resolve_member(load_container(path), member, path)


def source_path(source: str | Path) -> Path:
    """The file behind a ``source_file`` address."""
    return split_source(str(source))[0]
