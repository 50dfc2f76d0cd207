"""Which tool wrote a dump, and the dump's layout, from any folder inside it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_backend.dumps import expected
from studio_backend.dumps.formats import msit, msprobe, sglang_dumper, sglang_hook
from studio_backend.dumps.formats.common import RankFolder, TensorRef
from studio_backend.dumps.ranks_json import find_ranks
from studio_backend.errors import InputError
from studio_backend.paths import existing_dir


@dataclass
class DumpLayout:
    """A dump on disk: its format, identity root, rank folders (rank -> folder) and config."""

    format: str  # 'msit' | 'msprobe' | 'sglang_hook' | 'sglang_dumper'
    # msit: torch_tensors/; msprobe: the dump_path holding step<N>/; sglang_hook: the output
    # folder holding TP*_PP*_Rank*_pid*/; sglang_dumper: the exp_name folder of the records
    root: Path
    ranks: dict[str, int]  # rank folder name -> rank
    folders: dict[str, RankFolder]
    model_config: dict[str, Any] | None
    rank_order_note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tp_size(self) -> int:
        # the expected tp (studio_backend/dumps/expected.py), never fewer than the folders present
        exp = self.extra.get("expected")
        return max(len(set(self.ranks.values())), exp.tp if exp is not None else 1, 1)

    @property
    def missing_ranks(self) -> list[int]:
        """Ranks the run must have (expected tp) that no folder provides."""
        return sorted(set(range(self.tp_size)) - set(self.ranks.values()))

    def fit_device_ranks(self) -> None:
        """Folders ordered by device id with a rank missing: the device ids are the ranks when
        they fit the expected tp (``npu1`` alone at tp=2 is rank 1, not rank 0); otherwise which
        rank is absent cannot be told (``rank_source`` becomes "device ids (offset)")."""
        if self.extra.get("rank_source") not in ("device ids", "device ids (offset)"):
            return
        ids = {name: self.folders[name].device_id for name in self.ranks}
        if self.tp_size <= len(ids) or any(i is None for i in ids.values()):
            return
        if max(i for i in ids.values() if i is not None) < self.tp_size:
            self.ranks = {n: int(i) for n, i in ids.items() if i is not None}
            self.extra["rank_source"] = "device ids"
        else:
            self.extra["rank_source"] = "device ids (offset)"

    def tensor_files(self) -> list[Path]:
        if self.format == "msit":
            return msit.iter_tensor_files([f.path for f in self.folders.values()])
        if self.format == "sglang_hook":
            return sglang_hook.iter_tensor_files(self.root)
        if self.format == "sglang_dumper":
            return sglang_dumper.iter_tensor_files(self.root)
        return msprobe.iter_tensor_files(self.root)

    @property
    def containers(self) -> bool:
        """Files hold several tensors, or a tensor inside a record (SGLang): see ``refs``."""
        return self.format in ("sglang_hook", "sglang_dumper")

    def refs(self, path: Path) -> list[TensorRef]:
        """Every tensor in one file (a single-tensor file gives at most one)."""
        if self.containers:
            return self.extra["reader"].refs(path)
        ref = self.parse(path)
        return [] if ref is None else [ref]

    def order_key(self, path: Path) -> tuple | None:
        """Sort key that completes tensors early (all ranks of one tensor together); None:
        not a file of this dump. Container files sort by (step, rank folder)."""
        if self.format == "sglang_hook":
            n = sglang_hook.pass_of(path)
            return None if n is None else (n, path.parent.name)
        if self.format == "sglang_dumper":
            tags = sglang_dumper.parse_tags(path.name)
            if tags is None:
                return None
            return (int(tags["step"]), tags["name"], int(tags["dump_index"]), int(tags["rank"]))
        r = self.parse(path)
        if r is None:
            return None
        return (r.step, r.module, r.io, r.idx, r.arg_name or "", r.call_index or 0,
                r.rank_folder)  # fmt: skip

    def take_notes(self) -> list[tuple[Path, str]]:
        """What a container reader skipped (and why) since the last call."""
        reader = self.extra.get("reader")
        if reader is None:
            return []
        notes, reader.notes = reader.notes, []
        return notes

    def parse(self, path: Path) -> TensorRef | None:
        if self.containers:
            refs = self.refs(path)
            return refs[0] if refs else None
        if self.format == "msit":
            rank_dir = path.parent.parent.parent
            rf = self.folders.get(rank_dir.name)
            if rf is not None and rf.path != rank_dir:
                return None
            if rf is None and rank_dir.parent.name != "torch_tensors":
                return None
            return msit.parse_file(path, rf.classes if rf else None)
        return msprobe.parse_file(path, self.root, self.extra.get("classes", {}))

    def refresh(self) -> bool:
        """Re-read rank folders (new ones appear while a dump is written); True if changed."""
        fresh = detect(self.root, self.model_config, self.extra.get("launch_tp"))
        changed = fresh.ranks != self.ranks or fresh.tp_size != self.tp_size
        self.ranks, self.folders = fresh.ranks, fresh.folders
        self.model_config = self.model_config or fresh.model_config
        if "reader" in self.extra and "reader" in fresh.extra:  # keep notes not yet taken
            fresh.extra["reader"].notes[:0] = self.extra["reader"].notes
        self.extra.update(fresh.extra)
        self.rank_order_note = fresh.rank_order_note
        return changed


def _side(problems: list[tuple[str, str, str]], kind: str, read: Any, *args: Any) -> Any:
    """``read(*args)``, or None with the problem noted: a bad side file (ranks.json, config.json)
    becomes an error row of the run, never a refused ingest (issue 17 item 2)."""
    try:
        return read(*args)
    except InputError as exc:
        problems.append((exc.path, kind, f"{exc.problem}; ignored"))
        return None


def _find_json(start: Path, name: str, up: int = 3) -> dict[str, Any] | list[Any] | None:
    for p in [start, *list(start.parents)[:up]]:
        f = p / name
        if f.is_file():
            try:
                return json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f, f"unreadable JSON ({exc})") from exc
    return None


PID_ORDER_NOTE = "rank order ASSUMED from process ids (add ranks.json to be sure)"


def _assign_ranks(
    folders: list[RankFolder], ranks_json: dict[str, int] | None
) -> tuple[dict[str, int], str]:
    """Rank of each folder and where the order came from: ranks.json if given ("ranks.json"),
    else the folder names ("rank folders"), else device ids ("device ids"), else PIDs ("pids")."""
    names = [f.folder for f in folders]
    if ranks_json is not None:
        return {n: r for n, r in ranks_json.items() if n in names}, "ranks.json"
    if all(f.rank is not None for f in folders):  # msprobe rank<R>, SGLang TP ranks
        return {f.folder: int(f.rank) for f in folders}, "rank folders"
    if all(f.device_id is not None for f in folders):
        order = sorted(folders, key=lambda f: f.device_id or 0)
        return {f.folder: i for i, f in enumerate(order)}, "device ids"
    order = sorted(folders, key=lambda f: f.pid or 0)
    return {f.folder: i for i, f in enumerate(order)}, "pids"


def detect(
    start: str | Path,
    model_config: dict[str, Any] | None = None,
    launch_tp: tuple[int, str] | None = None,
) -> DumpLayout:
    """The layout of the dump that ``start`` is (or lies inside). ``launch_tp``: the tp of the
    launch that wrote it and its name (evidence for the expected tp, studio_backend/dumps/expected.py).

    A malformed ranks.json or config.json is ignored and listed in ``extra["side_problems"]``
    (path, kind, message): the ingest records them as error rows."""
    path = existing_dir(start, "dump folder")
    ranks_json: dict[str, int] | None = None
    problems: list[tuple[str, str, str]] = []
    if msit.is_msit(path):
        root = cfg_start = msit.find_torch_tensors(path)
        folders = msit.list_rank_folders(root)
        fmt = "msit"
        extra: dict[str, Any] = {}
        ranks_json = _side(problems, "bad_ranks_json", find_ranks, root)
        names = set(ranks_json) if ranks_json is not None else None
        have = {f.folder for f in folders}
        if names is None or not names <= have:
            more = msit.sibling_rank_folders(root, names - have if names is not None else None)
            if more:
                # ranks spread over several msit_dump_* sessions: the run is their dump_path
                folders += more
                root = root.parent.parent
                for f in more:  # rank 0's session may hold ranks.json and config.json
                    if ranks_json is None:
                        ranks_json = _side(problems, "bad_ranks_json", find_ranks, f.path.parent, 1)
                    if cfg_start.parent == root or not (cfg_start.parent / "config.json").exists():
                        cfg_start = (
                            f.path.parent
                            if (f.path.parent.parent / "config.json").exists()
                            else cfg_start
                        )
    elif msprobe.is_msprobe(path):
        root = msprobe.find_root(path)
        folders = msprobe.list_rank_folders(root)
        fmt = "msprobe"
        extra = {"classes": msprobe.collect_classes(root)}
        ranks_json = _side(problems, "bad_ranks_json", find_ranks, root)
        cfg_start = root
    elif sglang_hook.is_sglang_hook(path):
        root = cfg_start = sglang_hook.find_root(path)
        folders = sglang_hook.list_rank_folders(root)
        fmt = "sglang_hook"
        extra = {"reader": sglang_hook.HookReader(root)}
        ranks_json = None  # the folder names carry the TP rank
    elif sglang_dumper.is_sglang_dumper(path):
        root = cfg_start = sglang_dumper.find_root(path)
        reader = sglang_dumper.DumperReader(root)
        folders = reader.rank_folders()
        fmt = "sglang_dumper"
        extra = {"reader": reader}
        ranks_json = None  # each record's meta carries the TP rank
    else:
        raise InputError(
            path,
            "not an msit_llm or msprobe dump, nor an SGLang one (no torch_tensors/, step<N>/, "
            "TP<t>_PP<p>_Rank<r>_pid<n>/ folders or step=…___rank=… records)",
        )
    ranks, rank_source = _assign_ranks(folders, ranks_json)
    note = PID_ORDER_NOTE if rank_source == "pids" and len(ranks) > 1 else ""
    cfg = model_config or _side(problems, "bad_config", _find_json, cfg_start, "config.json")
    if "reader" in extra and isinstance(cfg, dict):  # SGLang's TP semantics depend on the model
        archs = cfg.get("architectures")
        extra["reader"].architectures = [str(a) for a in archs] if isinstance(archs, list) else None
    layout = DumpLayout(
        fmt, root, ranks, {f.folder: f for f in folders}, cfg if isinstance(cfg, dict) else None,
        note, extra,
    )  # fmt: skip
    layout.extra["side_problems"] = problems
    layout.extra["launch_tp"] = launch_tp
    layout.extra["rank_source"] = rank_source
    layout.extra["expected"] = expected.of_layout(layout, ranks_json, launch=launch_tp)
    layout.fit_device_ranks()
    return layout
