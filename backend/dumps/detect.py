"""Which tool wrote a dump, and the dump's layout, from any folder inside it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.dumps.formats import msit, msprobe
from backend.dumps.formats.common import RankFolder, TensorRef
from backend.errors import InputError
from backend.paths import existing_dir


@dataclass
class DumpLayout:
    """A dump on disk: its format, identity root, rank folders (rank -> folder) and config."""

    format: str  # 'msit' | 'msprobe'
    root: Path  # msit: torch_tensors/; msprobe: the dump_path holding step<N>/
    ranks: dict[str, int]  # rank folder name -> rank
    folders: dict[str, RankFolder]
    model_config: dict[str, Any] | None
    rank_order_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tp_size(self) -> int:
        return max(len(set(self.ranks.values())), 1)

    def tensor_files(self) -> list[Path]:
        if self.format == "msit":
            return msit.iter_tensor_files(self.root)
        return msprobe.iter_tensor_files(self.root)

    def parse(self, path: Path) -> TensorRef | None:
        if self.format == "msit":
            try:
                folder = path.relative_to(self.root).parts[0]
            except (ValueError, IndexError):
                return None
            rf = self.folders.get(folder)
            return msit.parse_file(path, self.root, rf.classes if rf else None)
        return msprobe.parse_file(path, self.root, self.extra.get("classes", {}))

    def refresh(self) -> bool:
        """Re-read rank folders (new ones appear while a dump is written); True if changed."""
        fresh = detect(self.root)
        changed = fresh.ranks != self.ranks
        self.ranks, self.folders = fresh.ranks, fresh.folders
        self.model_config = self.model_config or fresh.model_config
        self.extra.update(fresh.extra)
        self.rank_order_note = fresh.rank_order_note
        return changed


def _find_json(start: Path, name: str, up: int = 3) -> dict[str, Any] | list[Any] | None:
    for p in [start, *list(start.parents)[:up]]:
        f = p / name
        if f.is_file():
            try:
                return json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f, f"unreadable JSON ({exc})") from exc
    return None


def _assign_ranks(folders: list[RankFolder], ranks_json: Any) -> tuple[dict[str, int], str]:
    """Rank of each folder: ranks.json if given, else device id order, else PID order (noted)."""
    names = [f.folder for f in folders]
    if isinstance(ranks_json, dict) and isinstance(ranks_json.get("ranks"), dict | list):
        ranks_json = ranks_json["ranks"]
    if isinstance(ranks_json, list):
        return {n: i for i, n in enumerate(ranks_json) if n in names}, "ranks.json"
    if isinstance(ranks_json, dict):
        return {n: int(r) for n, r in ranks_json.items() if n in names}, "ranks.json"
    if all(f.rank is not None for f in folders):  # msprobe rank<R>
        return {f.folder: int(f.rank) for f in folders}, "rank folders"
    if all(f.device_id is not None for f in folders):
        order = sorted(folders, key=lambda f: f.device_id or 0)
        return {f.folder: i for i, f in enumerate(order)}, "device ids"
    order = sorted(folders, key=lambda f: f.pid or 0)
    note = (
        "" if len(order) <= 1 else "rank order ASSUMED from process ids (add ranks.json to be sure)"
    )
    return {f.folder: i for i, f in enumerate(order)}, note


def detect(start: str | Path, model_config: dict[str, Any] | None = None) -> DumpLayout:
    """The layout of the dump that ``start`` is (or lies inside)."""
    path = existing_dir(start, "dump folder")
    if msit.is_msit(path):
        root = msit.find_torch_tensors(path)
        folders = msit.list_rank_folders(root)
        fmt = "msit"
        extra: dict[str, Any] = {}
    elif msprobe.is_msprobe(path):
        root = msprobe.find_root(path)
        folders = msprobe.list_rank_folders(root)
        fmt = "msprobe"
        extra = {"classes": msprobe.collect_classes(root)}
    else:
        raise InputError(
            path, "not an msit_llm or msprobe dump (no torch_tensors/ or step<N>/ folders)"
        )
    ranks_json = _find_json(root, "ranks.json")
    ranks, note = _assign_ranks(folders, ranks_json)
    cfg = model_config or _find_json(root, "config.json")
    return DumpLayout(
        fmt, root, ranks, {f.folder: f for f in folders}, cfg if isinstance(cfg, dict) else None,
        note if note not in ("ranks.json", "rank folders", "device ids") else "", extra,
    )  # fmt: skip
