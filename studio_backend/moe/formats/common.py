"""Helpers shared by the expert-load readers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from studio_backend.errors import InputError


def load_pt(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (never unpickles code); errors name the file."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is bad input
        # torch's message spans many lines and suggests weights_only=False: keep one line
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[-2] if len(lines) > 2 else (lines[0] if lines else "")
        raise InputError(
            path,
            "not a readable torch.save file of tensors/lists/dicts "
            f"({type(exc).__name__}: {detail[:160]})",
        ) from exc


def int_tensor(obj: Any, path: Path, what: str, ndim: int | tuple[int, ...]) -> torch.Tensor:
    """Check ``obj`` is an integer-valued tensor with the expected number of dims."""
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if not isinstance(obj, torch.Tensor):
        raise InputError(path, f"{what} is {type(obj).__name__}, expected a tensor")
    if obj.ndim not in dims:
        raise InputError(path, f"{what} has shape {list(obj.shape)}, expected {dims[0]} dims")
    if obj.is_floating_point():
        if not torch.isfinite(obj).all():  # inf would become INT64_MIN in the cast below
            raise InputError(path, f"{what} holds inf or NaN counts")
        if not torch.equal(obj, obj.round()):
            raise InputError(path, f"{what} holds non-integer counts")
    if obj.numel() == 0:
        raise InputError(path, f"{what} is empty (shape {list(obj.shape)})")
    if (obj < 0).any():
        raise InputError(path, f"{what} holds negative counts")
    return obj.to(torch.int64)
