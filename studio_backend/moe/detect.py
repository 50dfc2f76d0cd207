"""Pick the reader for a user-given path (file or folder) and return LoadSets."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from studio_backend.errors import InputError
from studio_backend.moe.formats import expert_map, mindie, sglang, vllm
from studio_backend.moe.formats.common import load_pt
from studio_backend.moe.records import LoadSet
from studio_backend.paths import existing_file


def read_source(
    raw: str | Path, num_devices: int | None = None, expert_map_path: str | Path | None = None
) -> list[LoadSet]:
    """Read a recorder file or folder; a MindIE folder gives one LoadSet per phase."""
    path = Path(raw).expanduser().resolve()
    if not path.exists():
        raise InputError(path, "does not exist")
    if num_devices is not None and num_devices < 1:
        raise InputError(f"--devices {num_devices}", "the number of EP devices must be >= 1")
    placement = expert_map.read(existing_file(expert_map_path)) if expert_map_path else None
    if path.is_dir():
        recorder = sorted(path.glob("expert_distribution_recorder_*.pt"))
        if recorder:  # SGLang per_pass/per_token write one file per rank: merge them
            return [_merge([sglang.read(f, num_devices or len(recorder)) for f in recorder], path)]
        return [mindie.read(folder, phase) for phase, folder in mindie.phases(path).items()]
    if path.suffix == ".json":
        raise InputError(path, "an expert map is a placement, not a load: pass it as --expert-map")
    if path.suffix == ".csv":
        raise InputError(path, "MindIE CSVs are read per folder: give the folder holding them")
    data = load_pt(path)
    if isinstance(data, dict) and ("logical_count" in data or "records" in data):
        return [sglang.read(path, num_devices)]
    return [vllm.read(path, num_devices, placement)]


def _merge(loads: list[LoadSet], path: Path) -> LoadSet:
    """One source from several rank files of the same SGLang recording."""
    if len(loads) == 1:
        return loads[0]
    kinds = {x.kind for x in loads}
    if len(kinds) != 1 or "sglang-stat" in kinds:
        raise InputError(
            path, f"mixes recorder files that cannot be merged ({', '.join(sorted(kinds))})"
        )
    tokens = [x.tokens for x in loads if x.tokens is not None]
    first = loads[0]
    return LoadSet(
        first.kind,
        str(path),
        pd.concat([x.counts for x in loads], ignore_index=True),
        max(x.num_experts for x in loads),
        max(x.num_devices for x in loads),
        top_k=first.top_k,
        tokens=pd.concat(tokens, ignore_index=True) if tokens else None,
        meta={"files": [Path(x.path).name for x in loads]},
    )
