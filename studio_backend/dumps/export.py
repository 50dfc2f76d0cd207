"""Stitched tensors out as ``.npy`` in the seed's layout (float32, names without ``model.``).

``DIR/step<s>/layers.<i>.<rest>/input.npy`` and ``output.npy``; extra positional tensors as
``input_<i>.npy``; split parts as ``output.q.npy`` / ``output.k.npy`` / ``output.v.npy`` and
``output.gate.npy`` / ``output.up.npy``. ``flat=True`` writes one step without ``step<s>/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from studio_backend.dumps.query import find_tensors, load_tensor
from studio_backend.errors import InputError
from studio_backend.workspace import Workspace


def export_name(module: str) -> str:
    """'model.layers.0.mlp' -> 'layers.0.mlp' (the seed's folder names)."""
    return module.removeprefix("root.").removeprefix("model.")


def _text(v: object) -> str | None:
    return v if isinstance(v, str) else None  # pandas gives NaN for SQL NULL


def file_name(io: str, idx: int, part: object, arg_name: object, call_index: int) -> str:
    part, arg_name = _text(part), _text(arg_name)
    name = io if idx in (0, None) else (f"{io}.{arg_name}" if idx == -1 else f"{io}_{idx}")
    if call_index:
        name += f".call{call_index}"
    if part:
        name += f".{part}"
    return name + ".npy"


def export_npy(
    ws: Workspace, run_id: str, out: Path, steps: list[int] | None = None, flat: bool = False
) -> list[Path]:
    """Write every stitched tensor of ``run_id`` (optionally only ``steps``); returns the files."""
    df = find_tensors(ws, run_id)
    if steps is not None:
        df = df[df.step.isin(steps)]
    present = sorted(set(df.step))
    if df.empty:
        raise InputError(
            out, f"no stitched tensors in run {run_id}" + (f" for steps {steps}" if steps else "")
        )
    if flat and len(present) != 1:
        raise InputError(
            out, f"--flat writes one step, but steps {present} are selected: add --steps N"
        )
    written = []
    for row in df.itertuples(index=False):
        folder = out if flat else out / f"step{row.step}"
        target = (
            folder
            / export_name(row.module)
            / file_name(row.io, int(row.idx), row.part, row.arg_name, int(row.call_index or 0))
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        t = load_tensor(ws, int(row.tensor_id)).to(torch.float32)
        np.save(target, t.numpy())
        written.append(target)
    return written
