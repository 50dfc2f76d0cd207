"""SGLang's dumper (``debug_utils/dumper.py``; ``DUMPER_ENABLE=1``, ``DUMPER_DIR``).

Layout: ``<DUMPER_DIR>/<exp_name>/step=<s>___rank=<r>___dump_index=<i>___name=<n>[___<k>=<v>...].pt``
(tags joined by ``___``: step, world rank, a per-process running index, the name, then
``recompute_status`` and any keyword tags such as ``layer_id``; with
``include_parallel_rank_in_filename`` also ``tp_rank=`` etc.). Every rank writes into the same
``exp_name`` folder. Each file is ``torch.save({"value": tensor, "meta": {...}})``; ``meta``
repeats the tags and adds ``world_rank``, ``world_size`` and ``sglang_parallel_info``
(``tp_rank``, ``tp_size``, ``pp_rank``, ``pp_size``, MoE and attention ranks).

Names: the non-intrusive hooks (``DUMPER_NON_INTRUSIVE_MODE=all``) dump every module as
``non_intrusive__<module>.output[.<i>]`` and ``non_intrusive__<module>.inputs.<i|kwarg>[.<i>]``
(a tuple keeps its tensors, numbered among tensors; one tensor drops the number); the root
model is ``non_intrusive__output`` / ``non_intrusive__inputs.<i>`` (module ``root``). Inside
``model.layers.N`` records carry a ``layer_id`` tag; a module shared by all layers (the one
``RotaryEmbedding``) is named after its first path, so the tag's layer replaces it. ``core`` mode (default)
dumps only ForwardBatch fields by their own names (``input_ids``, ``positions``, ``seq_lens``,
``req_pool_indices``; ``rids`` are strings and are skipped). Any other ``dumper.dump(name, x,
**tags)`` call gives a module named ``name`` (``layers.<id>.name`` with a ``layer_id`` tag; other
tags appended as ``[k=v]``).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_backend.dumps.formats.common import Member, RankFolder, TensorRef, load_container
from studio_backend.dumps.formats.sglang_names import sglang_class
from studio_backend.errors import InputError

_HEAD = re.compile(r"^step=(-?\d+)___rank=(\d+)___dump_index=(\d+)___name=")
_PREFIX = "non_intrusive__"
_NI = re.compile(r"^(?:(?P<mod>.+?)\.)?(?P<io>output|inputs\.(?P<arg>[^.]+))(?:\.(?P<key>.+))?$")
# tags that locate a record rather than name what it is
_PLACE_TAGS = {"step", "rank", "dump_index", "name", "recompute_status", "pp_rank", "tp_rank",
               "cp_rank", "ep_rank", "etp_rank"}  # fmt: skip
_SKIP_NAMES = {"rids"}  # request ids: strings, not tensors
_LAYERS = re.compile(r"(?<![^.])layers\.\d+\.")


def parse_tags(fname: str) -> dict[str, str] | None:
    """The ``k=v`` tags of a dumper file name, or None if it is not one."""
    if not fname.endswith(".pt") or not _HEAD.match(fname):
        return None
    tags: dict[str, str] = {}
    for part in fname[:-3].split("___"):
        k, sep, v = part.partition("=")
        if not sep:
            return None
        tags[k] = v
    return tags


def _has_records(p: Path) -> bool:
    try:
        return p.is_dir() and any(_HEAD.match(c.name) for c in p.iterdir())
    except OSError:
        return False


def find_root(start: Path) -> Path:
    """The ``exp_name`` folder holding the records (the newest one when given ``DUMPER_DIR``)."""
    for p in (start, *start.parents):
        if _has_records(p):
            return p
    exps = sorted(c for c in start.iterdir() if _has_records(c)) if start.is_dir() else []
    if exps:
        return exps[-1]  # default exp names are dump_<UTC time>_...: the latest sorts last
    raise InputError(start, "no SGLang dumper records here (expected step=…___rank=…___"
                            "dump_index=…___name=….pt)")  # fmt: skip


def is_sglang_dumper(start: Path) -> bool:
    try:
        find_root(start)
    except (InputError, OSError):
        return False
    return True


def iter_tensor_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step=*.pt") if _HEAD.match(p.name))


def module_of(name: str, tags: dict[str, str]) -> tuple[str, str, int, str | None]:
    """(module, io, idx, arg_name) of a record's name."""
    if name.startswith(_PREFIX):
        m = _NI.match(name[len(_PREFIX) :])
        if m:
            module = m.group("mod") or "root"
            if "layer_id" in tags:
                # a module shared by every layer (SGLang's one RotaryEmbedding) is named after
                # its first path; the layer_id tag says which layer called it
                module = _LAYERS.sub(f"layers.{tags['layer_id']}.", module, count=1)
            key = m.group("key")
            if m.group("io") == "output":
                if key is None:
                    return module, "output", 0, None
                return (module, "output", int(key), None) if key.isdigit() else (
                    module, "output", 0, key)  # fmt: skip
            arg = m.group("arg")
            if arg.isdigit():
                return module, "input", int(arg), key
            return module, "input", -1, arg if key is None else f"{arg}.{key}"
    extra = "".join(f"[{k}={v}]" for k, v in tags.items()
                    if k not in _PLACE_TAGS and k != "layer_id")  # fmt: skip
    module = name + extra
    if "layer_id" in tags:
        module = f"model.layers.{tags['layer_id']}.{module}"
    return module, "output", 0, None


def _meta(path: Path) -> dict[str, Any]:
    obj = load_container(path)
    if not isinstance(obj, dict) or "value" not in obj:
        raise InputError(path, "not a dumper record (expected {'value': ..., 'meta': {...}})")
    meta = obj.get("meta")
    return meta if isinstance(meta, dict) else {}


def parallel_info(meta: dict[str, Any]) -> dict[str, Any]:
    for k, v in meta.items():
        if k.endswith("_parallel_info") and isinstance(v, dict) and "tp_rank" in v:
            return v
    return {}


@dataclass
class DumperReader:
    """Records of one ``exp_name`` folder as TensorRefs; world ranks mapped to TP ranks."""

    root: Path
    tp_of_world: dict[int, int] = field(default_factory=dict)
    notes: list[tuple[Path, str]] = field(default_factory=list)
    architectures: list[str] | None = None  # config.json's, when found
    _index: dict[tuple, list[tuple[int, Path]]] = field(default_factory=dict)
    _indexed: set[Path] = field(default_factory=set)
    _scanned: bool = False

    def rank_folders(self) -> list[RankFolder]:
        """One virtual folder ``rank<R>`` per world rank; TP rank and size from ``meta``."""
        first: dict[int, Path] = {}
        for p in iter_tensor_files(self.root):
            r = int(parse_tags(p.name)["rank"])  # type: ignore[index]
            first.setdefault(r, p)
        folders = []
        world_size = 0
        for world, p in sorted(first.items()):
            meta = _meta(p)
            info = parallel_info(meta)
            if int(info.get("pp_size", 1) or 1) > 1:
                raise InputError(p, "pipeline-parallel dumper records (pp_size > 1) are not "
                                    "stitched: dump with --pp-size 1")  # fmt: skip
            attn_tp = info.get("attn_tp_size")
            if attn_tp is not None and int(attn_tp) != int(info.get("tp_size", attn_tp)):
                raise InputError(p, f"DP attention (attention TP size {attn_tp} < TP size "
                                    f"{info.get('tp_size')}): attention tensors are split by "
                                    "request, which this stitcher does not undo")  # fmt: skip
            tp = int(info.get("tp_rank", world))
            self.tp_of_world[world] = tp
            folders.append(RankFolder(f"rank{world}", self.root, None, None, None, tp))
            if int(info.get("tp_size", -1)) == int(meta.get("world_size", -2)):
                world_size = max(world_size, int(meta["world_size"]))
        # plain TP (world = TP group): ranks that have written nothing yet are known too, so a
        # dump read while it is written never stitches a tensor from too few ranks
        for world in range(world_size):
            if world not in first:
                self.tp_of_world[world] = world
                folders.append(RankFolder(f"rank{world}", self.root, None, None, None, world))
        seen: dict[int, str] = {}
        for f in folders:
            if f.rank in seen:
                raise InputError(self.root, f"world ranks {seen[f.rank]} and {f.folder} both say "
                                            f"tp_rank {f.rank} (data-parallel replicas?): dump one "
                                            "replica per folder")  # fmt: skip
            seen[f.rank] = f.folder  # type: ignore[index]
        return folders

    def _key(self, tags: dict[str, str]) -> tuple:
        return (tags["step"], tags["rank"], tags["name"],
                tuple(sorted((k, v) for k, v in tags.items() if k not in _PLACE_TAGS)))  # fmt: skip

    def _add(self, path: Path, tags: dict[str, str]) -> None:
        calls = self._index.setdefault(self._key(tags), [])
        bisect.insort(calls, (int(tags["dump_index"]), path))
        self._indexed.add(path)

    def _scan(self) -> None:
        """Index every record on disk (once at start; again only when a sibling is missing).

        New records are added one by one as they are read, not by listing the folder again:
        a streaming dump would otherwise list a growing folder once per file.
        """
        for p in iter_tensor_files(self.root):
            tags = parse_tags(p.name)
            if tags is not None and p not in self._indexed:
                self._add(p, tags)
        self._scanned = True

    def _call_index(self, path: Path, tags: dict[str, str]) -> int:
        """Which call of this name (same step, rank and tags) the record is, by dump_index."""
        if not self._scanned:
            self._scan()
        if path not in self._indexed:
            self._add(path, tags)
        calls = self._index.get(self._key(tags), [])
        return next((i for i, (_d, p) in enumerate(calls) if p == path), 0)

    def _sibling(self, tags: dict[str, str], name: str) -> Path | None:
        for attempt in range(2):
            if attempt or not self._scanned:
                self._scan()
            for key, calls in self._index.items():
                if key[0] == tags["step"] and key[1] == tags["rank"] and key[2] == name:
                    return calls[0][1]
        return None

    def refs(self, path: Path) -> list[TensorRef]:
        tags = parse_tags(path.name)
        if tags is None or tags["name"] in _SKIP_NAMES:
            return []
        module, io, idx, arg = module_of(tags["name"], tags)
        view = self._qk_view(path, tags, module, io)
        if view is False:
            self.notes.append((path, f"{module}: cannot be split into tokens x heads (no "
                                     "qkv_proj output or input_ids record in this step); "
                                     "skipped"))  # fmt: skip
            return []
        return [TensorRef(
            path=path, rank_folder=f"rank{tags['rank']}", step=int(tags["step"]), module=module,
            io=io, idx=idx, arg_name=arg, call_index=self._call_index(path, tags),
            module_class=sglang_class(module, architectures=self.architectures),
            member=Member("value", (), view or None),
        )]  # fmt: skip

    def _qk_view(self, path: Path, tags: dict[str, str], module: str, io: str):  # noqa: ANN202
        """[tokens, heads, head_dim] for SGLang's 2-D q_norm/k_norm tensors (see sglang_hook)."""
        last = module.rsplit(".", 1)[-1]
        if last not in ("q_norm", "k_norm"):
            return ()
        value = load_container(path).get("value")
        if getattr(value, "dim", lambda: 0)() != 2:
            return ()
        prefix = module[: -len(last)]
        tokens = None
        for name in (f"{_PREFIX}{prefix}qkv_proj.output", "input_ids"):
            sib = self._sibling(tags, name)
            if sib is not None:
                v = load_container(sib).get("value")
                if getattr(v, "dim", lambda: 0)() >= 1:
                    tokens = int(v.shape[0])
                    break
        if not tokens or value.shape[0] % tokens:
            return False
        return (tokens, int(value.shape[0]) // tokens, int(value.shape[1]))
