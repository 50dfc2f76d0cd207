"""Pick the reader for a user-given path (file or folder) and return LoadSets."""

from __future__ import annotations

from pathlib import Path

from backend.errors import InputError
from backend.moe.formats import expert_map, mindie, sglang, vllm
from backend.moe.formats.common import load_pt
from backend.moe.records import LoadSet
from backend.paths import existing_file


def read_source(
    raw: str | Path, num_devices: int | None = None, expert_map_path: str | Path | None = None
) -> list[LoadSet]:
    """Read a recorder file or folder; a MindIE folder gives one LoadSet per phase."""
    path = Path(raw).expanduser().resolve()
    if not path.exists():
        raise InputError(path, "does not exist")
    placement = expert_map.read(existing_file(expert_map_path)) if expert_map_path else None
    if path.is_dir():
        return [mindie.read(folder, phase) for phase, folder in mindie.phases(path).items()]
    if path.suffix == ".json":
        raise InputError(path, "an expert map is a placement, not a load: pass it as --expert-map")
    if path.suffix == ".csv":
        raise InputError(path, "MindIE CSVs are read per folder: give the folder holding them")
    data = load_pt(path)
    if isinstance(data, dict) and ("logical_count" in data or "records" in data):
        return [sglang.read(path, num_devices)]
    return [vllm.read(path, num_devices, placement)]
