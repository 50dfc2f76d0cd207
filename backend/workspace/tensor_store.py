"""Tensors in safetensors files (dtype kept, bf16 included), read back memory-mapped."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open

if TYPE_CHECKING:  # torch is imported lazily: CLI commands that never touch tensors stay fast
    import torch

_SAFE = re.compile(r"[^A-Za-z0-9._\-/]")


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
        self, group: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
    ) -> str:
        """Write a group atomically (tmp + rename) and return its path relative to the root."""
        target = self.path(group)
        target.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        tmp = target.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, target)
        return str(target.relative_to(self.root))

    def names(self, group: str) -> list[str]:
        with safe_open(str(self.path(group)), framework="pt") as f:
            return list(f.keys())

    def get(self, group: str, name: str) -> torch.Tensor:
        """One tensor, memory-mapped from its file (no copy until it is used)."""
        with safe_open(str(self.path(group)), framework="pt") as f:
            return f.get_tensor(name)

    def exists(self, group: str) -> bool:
        return self.path(group).is_file()
