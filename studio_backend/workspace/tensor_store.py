"""Tensors in safetensors files (dtype kept, bf16 included), read back memory-mapped."""

from __future__ import annotations

import functools
import json
import os
import re
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

from studio_backend.workspace.faults import WorkspaceFault

if TYPE_CHECKING:  # torch is imported lazily: CLI commands that never touch tensors stay fast
    import torch

_SAFE = re.compile(r"[^A-Za-z0-9._\-/]")
VIEWS_KEY = "studio.views"  # metadata: {name: [stored tensor, start, end]} on the last dim


@functools.cache
def st_dtype_names() -> dict[torch.dtype, str]:
    """torch dtype -> safetensors dtype name (the dtypes the fast writer handles)."""
    import torch

    names = {
        "bool": "BOOL", "uint8": "U8", "int8": "I8", "int16": "I16", "uint16": "U16",
        "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64", "float16": "F16",
        "bfloat16": "BF16", "float32": "F32", "float64": "F64",
        "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    }  # fmt: skip
    return {getattr(torch, k): v for k, v in names.items() if hasattr(torch, k)}


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write the safetensors format straight from each tensor's memory.

    ``safetensors.torch.save_file`` copies every tensor into a bytes object and holds the GIL
    while writing; here each tensor is written from its own buffer (memory-mapped sources
    included) with the GIL released, so stitch threads overlap their writes.
    """
    import torch

    names = st_dtype_names()
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    start = 0
    bufs = []
    for name, t in tensors.items():
        t = t.contiguous()
        n = t.numel() * t.element_size()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [start, start + n]}  # fmt: skip
        bufs.append(t.reshape(-1).view(torch.uint8).numpy() if n else b"")
        start += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for b in bufs:
            f.write(memoryview(b))


class TensorStore:
    """Groups of named tensors; a group is one ``.safetensors`` file under the store root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, group: str) -> Path:
        clean = _SAFE.sub("_", group).strip("/")
        if not clean or ".." in Path(clean).parts:
            raise ValueError(f"bad tensor group name: {group!r}")
        return self.root / f"{clean}.safetensors"

    def put(
        self,
        group: str,
        tensors: dict[str, torch.Tensor],
        metadata: dict[str, str] | None = None,
        views: dict[str, tuple[str, int, int]] | None = None,
    ) -> str:
        """Write a group atomically (tmp + rename) and return its path relative to the root.

        ``views`` names column ranges ``[start, end)`` of a stored tensor's last dim (QKV and
        gate/up parts): they are read back as views, so their bytes are not stored twice.
        """
        target = self.path(group)
        target.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file  # dtypes the fast writer does not name

        meta = dict(metadata or {})
        if views:
            meta[VIEWS_KEY] = json.dumps({k: list(v) for k, v in views.items()})
        tmp = target.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        if all(v.dtype in st_dtype_names() for v in tensors.values()):
            write_safetensors(tmp, tensors, meta)
        else:
            save_file(
                {k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta or None
            )
        os.replace(tmp, target)
        return str(target.relative_to(self.root))

    def _open(self, group: str):  # noqa: ANN202 - safetensors' handle type is private
        path = self.path(group)
        if not path.is_file():
            raise WorkspaceFault(
                f"{path}: a stored tensor file is missing (the workspace's tensors/ folder was "
                "changed by hand). Re-ingest the run (studio ingest DUMP) to write it again."
            )
        return safe_open(str(path), framework="pt")

    def names(self, group: str) -> list[str]:
        with self._open(group) as f:
            views = json.loads((f.metadata() or {}).get(VIEWS_KEY, "{}"))
            return list(f.keys()) + list(views)

    def get(self, group: str, name: str) -> torch.Tensor:
        """One tensor, memory-mapped from its file (no copy until it is used)."""
        with self._open(group) as f:
            if name in f.keys():
                return f.get_tensor(name)
            views = json.loads((f.metadata() or {}).get(VIEWS_KEY, "{}"))
            if name not in views:
                raise KeyError(f"{name!r} is not in tensor group {group!r}")
            base, start, end = views[name]
            return f.get_tensor(base)[..., start:end]

    def exists(self, group: str) -> bool:
        return self.path(group).is_file()
