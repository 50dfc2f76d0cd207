"""msprobe dumps: ``<dump_path>/step<N>/rank<R>|proc<PID>/dump_tensor_data/*.pt``.

Tensor files are named ``Module.<path>.<Class>.forward.<call>.<input|output|kwargs>.<i>.pt``
and written as each module finishes; ``dump.json`` and ``construct.json`` only at ``stop()``,
so everything here works from file names alone (a crashed run still yields its tensors).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from studio_backend.dumps.formats.common import RankFolder, TensorRef
from studio_backend.errors import InputError

_STEP = re.compile(r"^step(\d+)$")
_RANK = re.compile(r"^(?:rank(\d+)|proc(\d+))$")


def find_root(start: Path) -> Path:
    """The dump_path holding ``step<N>/`` folders, from it or any folder inside it."""
    for p in (start, *start.parents):
        if any(_STEP.match(c.name) for c in p.iterdir() if c.is_dir()) if p.is_dir() else False:
            return p
        if _STEP.match(p.name):
            return p.parent
    raise InputError(start, "no msprobe dump here (expected step<N>/rank<R>/dump_tensor_data/)")


def is_msprobe(start: Path) -> bool:
    try:
        root = find_root(start)
    except (InputError, OSError):
        return False
    return any(root.glob("step*/*/dump_tensor_data")) or any(root.glob("step*/*/dump.json"))


def list_rank_folders(root: Path) -> list[RankFolder]:
    seen: dict[str, RankFolder] = {}
    for step in sorted(root.iterdir()):
        if not (step.is_dir() and _STEP.match(step.name)):
            continue
        for p in sorted(step.iterdir()):
            m = _RANK.match(p.name)
            if p.is_dir() and m and p.name not in seen:
                rank = int(m.group(1)) if m.group(1) is not None else None
                pid = int(m.group(2)) if m.group(2) is not None else None
                seen[p.name] = RankFolder(p.name, p, None, None, pid, rank)
    return list(seen.values())


def parse_name(fname: str) -> tuple[str, str, int, str, int, str | None] | None:
    """(module, class, call, io, idx, arg_name) from a tensor file name, or None."""
    if not fname.startswith("Module.") or not fname.endswith(".pt") or ".forward." not in fname:
        return None
    left, right = fname[len("Module.") : -len(".pt")].rsplit(".forward.", 1)
    if "." in left:
        module, cls = left.rsplit(".", 1)
    else:
        module, cls = "root", left
    bits = right.split(".")
    if len(bits) < 3 or not bits[0].isdigit():
        return None
    call, kind, rest = int(bits[0]), bits[1], bits[2:]
    if kind == "input" and rest[0].isdigit():
        return module, cls, call, "input", int(rest[0]), ".".join(rest) if len(rest) > 1 else None
    if kind == "output" and rest[0].isdigit():
        return module, cls, call, "output", int(rest[0]), ".".join(rest) if len(rest) > 1 else None
    if kind == "kwargs":  # keyword inputs have no position: idx -1, named by arg_name
        return module, cls, call, "input", -1, ".".join(rest)
    return None  # parameters and anything else are not activations


def parse_file(path: Path, root: Path, classes: dict[str, str] | None = None) -> TensorRef | None:
    try:
        step_dir, rank_dir, data_dir, fname = path.relative_to(root).parts
    except ValueError:
        return None
    m = _STEP.match(step_dir)
    if not m or data_dir != "dump_tensor_data":
        return None
    parsed = parse_name(fname)
    if parsed is None:
        return None
    module, cls, call, io, idx, arg = parsed
    return TensorRef(
        path=path, rank_folder=rank_dir, step=int(m.group(1)), module=module, io=io, idx=idx,
        arg_name=arg, call_index=call, module_class=cls,
    )  # fmt: skip


def iter_tensor_files(root: Path) -> list[Path]:
    return sorted(root.glob("step*/*/dump_tensor_data/*.pt"))


def collect_classes(root: Path) -> dict[str, str]:
    """``{module: class}`` from construct.json node names (when the run finished)."""
    out: dict[str, str] = {}
    for f in root.glob("step*/*/construct.json"):
        try:
            nodes = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for node in _names(nodes):
            if node.startswith("Module.") and ".forward." in node:
                left = node[len("Module.") :].rsplit(".forward.", 1)[0]
                if "." in left:
                    module, cls = left.rsplit(".", 1)
                    out[module] = cls
        break
    return out


def _names(nodes: Any) -> list[str]:
    if isinstance(nodes, dict):
        return [str(k) for k in nodes] + [str(v) for v in nodes.values() if isinstance(v, str)]
    return []


def _tensor_entries(item: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], dict]]:
    """(path, entry) of every tensor statistics entry in a (nested) dump.json argument."""
    if isinstance(item, dict) and "Max" in item and "type" in item:
        return [(path, item)] if str(item.get("type", "")).endswith("Tensor") else []
    if isinstance(item, dict):
        return [e for k, v in item.items() for e in _tensor_entries(v, (*path, str(k)))]
    if isinstance(item, list | tuple):
        return [e for i, v in enumerate(item) for e in _tensor_entries(v, (*path, str(i)))]
    return []


def read_dump_json_stats(path: Path) -> list[dict[str, Any]]:
    """Tool statistics (Max/Min/Mean/Norm) of every tensor entry in a dump.json.

    Positional inputs and outputs are ``idx`` i; nested ones (a tuple member, a named field of
    a model output) carry the rest of their path in ``arg_name`` (``0.last_hidden_state``),
    keyword inputs are ``idx`` -1 with ``arg_name`` their name: the same keys the tensor file
    names give (``...forward.0.kwargs.position_embeddings.1.pt``).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("data", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(path, f"unreadable dump.json ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(path, "dump.json 'data' is not an object")
    rows = []
    for key, entry in data.items():
        if not key.startswith("Module.") or ".forward." not in key or not isinstance(entry, dict):
            continue
        left = key[len("Module.") :].rsplit(".forward.", 1)[0]
        module, cls = left.rsplit(".", 1) if "." in left else ("root", left)
        for field in ("input_args", "input_kwargs", "output"):
            v = entry.get(field)
            if v is not None and not isinstance(v, list | tuple | dict):  # "output": 7
                raise InputError(path, f"dump.json entry {key!r} has {field} {v!r}: expected a "
                                 "list or object of tensor records")  # fmt: skip
        found = [("input", p, t) for p, t in _tensor_entries(entry.get("input_args") or [], ())]
        found += [("kwargs", p, t) for p, t in _tensor_entries(entry.get("input_kwargs") or {}, ())]
        found += [("output", p, t) for p, t in _tensor_entries(entry.get("output") or [], ())]
        for kind, p, t in found:
            if kind == "kwargs":
                io, idx, arg = "input", -1, ".".join(p)
            else:
                io, idx, arg = kind, int(p[0]), ".".join(p) if len(p) > 1 else None
            rows.append({
                "module": module, "module_class": cls, "io": io, "idx": idx, "arg_name": arg,
                "dtype": t.get("dtype"), "shape": str(t.get("shape")), "max": _num(t.get("Max")),
                "min": _num(t.get("Min")), "mean": _num(t.get("Mean")), "l2": _num(t.get("Norm")),
            })  # fmt: skip
    return rows


def _num(v: Any) -> float | None:
    """A statistic as float; msprobe writes null (integer tensors' mean) or strings like 'inf'."""
    try:
        return float(v) if v is not None and not isinstance(v, bool) else None
    except (TypeError, ValueError):
        return None
