"""msit_llm dumps: ``<dump_path>/msit_dump_<ts>/torch_tensors/<device>_<pid>/<step>/<module>/``.

Pure functions of paths (REFERENCE.md section 1): parsing a tensor file's location, the rank
folders, ``model_tree.json`` classes and ``statistics.csv`` rows. Nothing here touches the
database.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from studio_backend.dumps.formats.common import RankFolder, TensorRef
from studio_backend.errors import InputError

_RANK_DIR = re.compile(r"^(?:(npu|cuda|gpu)(\d+)_(\d+)|(cpu)_?(\d+))$")
_FILE = re.compile(r"^(input|output)((?:_\d+)*)\.pth?$")
# Functions msit wraps in api mode: torch_npu's all start with npu_; a few common torch ones.
_API_HINT = re.compile(r"^(npu_\w+|matmul|bmm|softmax|linear|silu|gelu|layer_norm|rms_norm)$")


def strip_root(name: str) -> str:
    """'root.model.layers.0' -> 'model.layers.0' (the top module itself stays 'root')."""
    return name[5:] if name.startswith("root.") else name


def parse_rank_folder(path: Path) -> RankFolder | None:
    """A rank folder from its name (``npu3_1234``, ``cuda0_77``, ``cpu_55``) or None."""
    m = _RANK_DIR.match(path.name)
    if not m:
        return None
    if m.group(1):
        return RankFolder(path.name, path, m.group(1), int(m.group(2)), int(m.group(3)))
    return RankFolder(path.name, path, "cpu", None, int(m.group(5)))


def find_torch_tensors(start: Path) -> Path:
    """The ``torch_tensors`` folder of the dump that ``start`` lies in (or holds)."""
    for p in (start, *start.parents):
        if p.name == "torch_tensors":
            return p
        if p.name.startswith("msit_dump") and (p / "torch_tensors").is_dir():
            return p / "torch_tensors"
    # a dump_path holding one or more msit_dump_* sessions: the latest one
    sessions = sorted(start.glob("msit_dump*/torch_tensors"))
    if sessions:
        return sessions[-1]
    if (start / "torch_tensors").is_dir():
        return start / "torch_tensors"
    raise InputError(start, "no msit dump here (expected msit_dump_*/torch_tensors/)")


def is_msit(start: Path) -> bool:
    try:
        find_torch_tensors(start)
    except InputError:
        return False
    return True


def model_tree_classes(tree: dict[str, Any]) -> dict[str, str]:
    """``{module: class}`` from a nested ``{"name","type","children"}`` model_tree.json."""
    out: dict[str, str] = {}

    def walk(node: dict[str, Any], parent: str | None) -> None:
        name = str(node.get("name", ""))
        if parent is not None and name and not name.startswith(parent + "."):
            name = f"{parent}.{name}"  # children given with local names
        if node.get("type"):
            out[strip_root(name) if name else "root"] = str(node["type"])
        for child in node.get("children") or []:
            if isinstance(child, dict):
                walk(child, name or "root")

    walk(tree, None)
    return out


def read_model_tree(rank_dir: Path) -> dict[str, str]:
    """Classes from a rank folder's model_tree.json; {} when absent, partial or unreadable."""
    path = rank_dir / "model_tree.json"
    try:
        tree = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return model_tree_classes(tree) if isinstance(tree, dict) else {}


def split_api(folder: str, classes: dict[str, str]) -> tuple[str, str]:
    """(module, kind) for a step's module folder name; api-mode folders are ``<module>.<api>``."""
    module = strip_root(folder)
    if "." in module:
        parent, last = module.rsplit(".", 1)
        if module not in classes and (parent in classes or _API_HINT.match(last)):
            return module, "api"
    return module, "module"


def parse_file(path: Path, classes: dict[str, str] | None = None) -> TensorRef | None:
    """The TensorRef of one ``<rank>/<step>/<module>/<file>.pth`` or None if it is not one."""
    if len(path.parts) < 4:
        return None
    rank_folder, step, folder, fname = path.parts[-4:]
    m = _FILE.match(fname)
    if not m or not step.isdigit():
        return None
    io, suffix = m.group(1), m.group(2)
    nums = [int(x) for x in suffix.split("_") if x]
    idx = nums[0] if nums else 0
    arg_name = "_".join(map(str, nums)) if len(nums) > 1 else None
    module, kind = split_api(folder, classes or {})
    return TensorRef(
        path=path, rank_folder=rank_folder, step=int(step), module=module, io=io, idx=idx,
        arg_name=arg_name, module_class=(classes or {}).get(module), kind=kind,
    )  # fmt: skip


_SESSION = re.compile(r"^msit_dump_(\d{8})_(\d{6})$")


def session_seconds(name: str) -> int | None:
    """Seconds of an ``msit_dump_YYYYMMDD_HHMMSS`` session name (for grouping ranks), or None."""
    m = _SESSION.match(name)
    if not m:
        return None
    d, t = m.group(1), m.group(2)
    days = int(d[:4]) * 372 + int(d[4:6]) * 31 + int(d[6:])  # monotonic, not calendar-exact
    return days * 86400 + int(t[:2]) * 3600 + int(t[2:4]) * 60 + int(t[4:])


def sibling_rank_folders(
    torch_tensors: Path, names: set[str] | None, window_s: int = 10
) -> list[RankFolder]:
    """Rank folders of the same run written into other ``msit_dump_*`` sessions.

    Each rank process may stamp its own session folder (seconds apart). With ``names`` (from
    ranks.json) exactly those folders are taken; without, sessions within ``window_s``.
    """
    session = torch_tensors.parent
    base = session_seconds(session.name)
    out = []
    for other in sorted(session.parent.glob("msit_dump*/torch_tensors")):
        if other == torch_tensors:
            continue
        sec = session_seconds(other.parent.name)
        for rf in list_rank_folders(other):
            if names is not None:
                if rf.folder in names:
                    out.append(rf)
            elif base is not None and sec is not None and abs(sec - base) <= window_s:
                out.append(rf)
    return out


def list_rank_folders(torch_tensors: Path) -> list[RankFolder]:
    folders = []
    for p in sorted(torch_tensors.iterdir()):
        if p.is_dir():
            rf = parse_rank_folder(p)
            if rf is not None:
                rf.classes = read_model_tree(p)
                folders.append(rf)
    return folders


def iter_tensor_files(rank_dirs: list[Path]) -> list[Path]:
    return sorted(f for d in rank_dirs for f in d.glob("*/*/*.pt*"))


_STAT_COLS = ("NodeName", "NodeType", "InputOutput", "Index", "DataType", "Shape")


def read_statistics_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a statistics.csv (``dump_statistics_mode`` 1/2): one per tensor, numbers parsed."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in _STAT_COLS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path, f"statistics.csv lacks columns {missing}")
            rows = []
            for r in reader:
                io = r["InputOutput"].strip().lower()
                rows.append({
                    "module": strip_root(r["NodeName"].strip()),
                    "module_class": r["NodeType"].strip() or None,
                    "io": "input" if io.startswith("in") else "output",
                    "idx": int(r["Index"]) if r["Index"].strip().lstrip("-").isdigit() else 0,
                    "dtype": r["DataType"].strip(),
                    "shape": r["Shape"].strip(),
                    "max": _num(r.get("Max")), "min": _num(r.get("Min")),
                    "mean": _num(r.get("Mean")), "l2": _num(r.get("L2Norm")),
                })  # fmt: skip
            return rows
    except UnicodeDecodeError as exc:
        raise InputError(path, f"statistics.csv is not UTF-8 text (byte {exc.start})") from exc
    except (AttributeError, TypeError) as exc:  # a short row: DictReader fills None
        raise InputError(path, f"statistics.csv has a short or malformed row ({exc})") from exc
    except (OSError, csv.Error, KeyError, ValueError) as exc:
        raise InputError(path, f"unreadable statistics.csv ({exc})") from exc


def _num(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "") else None
    except ValueError:
        return None
