"""What runs on one node: the ingest stages over the rank folders that node holds.

``NodeStages`` is plain Python (tested without Ray); ``worker_class`` wraps it as a threaded
Ray actor placed on the node. Everything returned is small (rows, statistics, outlier lists,
tiles) except a shard another node asked for to stitch a tensor whose ranks are spread out.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from studio_backend.dumps import expected, file_checks
from studio_backend.dumps.detect import DumpLayout, detect
from studio_backend.dumps.formats.common import load_source
from studio_backend.dumps.formats.torch_zip import read_ends
from studio_backend.dumps.ranks_json import find_ranks
from studio_backend.errors import InputError


@dataclass
class NodeView:
    """What one node found under its DUMP (no tensor data): enough to merge the layouts."""

    node_id: str
    dump_root: str  # DUMP as given for this node
    format: str
    root: str  # the layout's identity root on this node
    folders: list  # RankFolder
    ranks_json: dict[str, int] | None
    model_config: dict[str, Any] | None
    probe_shapes: list
    classes: dict[str, str]
    side_problems: list  # (path, kind, message): a bad ranks.json / config.json on this node


@dataclass
class Listed:
    """A node's files of its rank folders, in tensor order, and what it skipped."""

    files: list[tuple[tuple, str, str]]  # (order key, path, relpath)
    notes: list[tuple[str, str, str]]  # (path, kind, message)


def _meta(t: torch.Tensor | None) -> torch.Tensor | None:
    """dtype and shape only (a tensor on the 'meta' device pickles in a few bytes)."""
    return None if t is None else torch.empty(t.shape, dtype=t.dtype, device="meta")


def folder_of(layout: DumpLayout, path: Path) -> str | None:
    """The rank folder a tensor file belongs to (reads no tensor data where the name says)."""
    if layout.format == "sglang_hook":
        return path.parent.name
    ref = layout.parse(path)
    return ref.rank_folder if ref is not None else None


class NodeStages:
    """The stages for one node's files; the mapped tensors wait here for their stitch."""

    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id
        self._layouts: dict[str, DumpLayout] = {}
        self._mapped: dict[str, Any] = {}
        self._lock = threading.Lock()

    def layout(self, dump_root: str, model_config: dict[str, Any] | None = None) -> DumpLayout:
        with self._lock:
            if dump_root not in self._layouts:
                self._layouts[dump_root] = detect(dump_root, model_config)
            return self._layouts[dump_root]

    # -- discover ------------------------------------------------------------------------
    def discover(self, dump_root: str, model_config: dict[str, Any] | None) -> NodeView | str:
        """This node's view of DUMP, or why there is none here (a missing folder is normal:
        not every node holds part of every dump)."""
        if not Path(dump_root).is_dir():
            return f"{dump_root}: no such folder on this node"
        try:
            with self._lock:
                self._layouts.pop(dump_root, None)
            lay = self.layout(dump_root, model_config)
        except InputError as exc:
            return str(exc)
        try:  # a bad ranks.json is already one of the layout's side problems
            rj = find_ranks(lay.root) if lay.format in ("msit", "msprobe") else None
        except InputError:
            rj = None
        shapes = expected.probe_files(lay) if expected.heads_of(lay.model_config) else []
        return NodeView(
            self.node_id, dump_root, lay.format, str(lay.root), list(lay.folders.values()), rj,
            lay.model_config, shapes, dict(lay.extra.get("classes", {}) or {}),
            list(lay.extra.get("side_problems", [])),
        )  # fmt: skip

    def list_files(self, dump_root: str, folders: list[str]) -> Listed:
        """The tensor files of the given rank folders, sorted so tensors complete early."""
        lay = self.layout(dump_root)
        want = set(folders)
        out, notes = [], []
        for p in lay.tensor_files():
            bad = file_checks.name_problem(p) or file_checks.not_regular(p)
            if bad:
                notes.append((file_checks.printable(p), "skipped", bad))
                continue
            try:
                if folder_of(lay, p) not in want:
                    continue
                key = lay.order_key(p)
            except InputError as exc:
                notes.append((str(p), "unreadable", exc.problem))
                continue
            if key is not None:
                out.append((key, str(p), str(p.relative_to(lay.root))))
        out.sort(key=lambda x: x[0])
        return Listed(out, notes)

    # -- catalog -------------------------------------------------------------------------
    def catalog(self, dump_root: str, batch: list[tuple[str, str]], done: dict[str, str]):
        """Catalog files not yet ingested under their current content: (entries, notes, bad
        files). Entries carry no tensor (it stays mapped here for its stitch) and a plain
        error string; mirrors ``Ingestor.pending`` + ``catalog_file``."""
        from studio_backend.dumps.pipeline.catalog import catalog_file, catalog_members
        from studio_backend.dumps.pipeline.discover import content_key

        lay = self.layout(dump_root)
        entries, notes, bad_files = [], [], []
        for path_s, rel in batch:
            p = Path(path_s)
            try:
                ends = read_ends(p)
            except (OSError, ValueError):
                continue  # vanished meanwhile
            key = content_key(p, ends=ends)
            if done.get(rel) == key:
                continue
            try:
                refs = lay.refs(p)
            except InputError as exc:
                notes.append((str(p), "unreadable", exc.problem))
                bad_files.append((rel, key, ends.size))
                continue
            finally:
                notes += [(str(q), "skipped", m) for q, m in lay.take_notes()]
            if not refs:
                continue
            got = (
                [catalog_file(refs[0], rel, key, ends)]
                if len(refs) == 1 and refs[0].member is None
                else catalog_members(refs, rel, key, ends)
            )
            for e in got:
                if e.tensor is not None:
                    with self._lock:
                        self._mapped[e.ref.source] = e.tensor
                err = e.error.problem if e.error is not None else None
                entries.append((replace(e, tensor=None, error=None), err))
        return entries, notes, bad_files

    # -- stitch --------------------------------------------------------------------------
    def take(self, source: str) -> torch.Tensor:
        """One rank tensor for a stitch on another node (handed over, then forgotten here)."""
        with self._lock:
            t = self._mapped.pop(source, None)
        return (t if t is not None else load_source(source)).contiguous()

    def stitch(self, job, tp: int, heads, run_id: str, store_root: str, pulled: list[str],
               *tensors: torch.Tensor):  # fmt: skip
        """Stitch one tensor here (shards of other nodes arrive as ``tensors``), store it in
        this node's store, and return the result with dtype/shape-only tensors."""
        from studio_backend.dumps.pipeline.stitch_stage import run_stitch
        from studio_backend.dumps.stitch.rules import choose
        from studio_backend.dumps.stitch.stitcher import StitchResult
        from studio_backend.workspace.tensor_store import TensorStore

        torch.set_num_threads(1)
        mapped = dict(zip(pulled, tensors, strict=True))
        with self._lock:
            for f in job.files.values():
                if f not in mapped and f in self._mapped:
                    mapped[f] = self._mapped.pop(f)
        try:
            job, choice, res, loc = run_stitch(job, tp, heads, TensorStore(Path(store_root)),
                                               run_id, mapped)  # fmt: skip
        except InputError as exc:
            res = StitchResult("unreadable", "failed", sorted(job.files), detail=str(exc))
            return job, choose(job.module, job.module_class, job.io, job.idx), res, None
        res.tensor = _meta(res.tensor)
        res.parts = {k: _meta(v) for k, v in res.parts.items()}
        return job, choice, res, loc

    def forget(self, sources: list[str]) -> None:
        with self._lock:
            for s in sources:
                self._mapped.pop(s, None)

    # -- statistics, reads ---------------------------------------------------------------
    def stats(self, args: list[tuple]) -> list:
        """``stats_or_problem`` for each (store root, group file, name, source, token dims)."""
        from studio_backend.dumps.pipeline.stats_stage import stats_or_problem

        torch.set_num_threads(1)
        return [stats_or_problem(*a) for a in args]

    def read(self, store_root: str, group_file: str | None, name: str | None,
             source: str | None) -> torch.Tensor:  # fmt: skip
        """One tensor as stored on this node (a copy: it leaves the node)."""
        return self._open(store_root, group_file, name, source).contiguous()

    def check_partial(self, mine: tuple, parent: tuple | torch.Tensor, n_ranks: int):  # noqa: ANN201
        """verify.check_partial here: ``mine`` (and ``parent``, unless another node sent the
        tensor) are (store root, group file, name, source) of tensors on this node."""
        from studio_backend.dumps.pipeline.verify import check_partial

        torch.set_num_threads(1)
        p = parent if isinstance(parent, torch.Tensor) else self._open(*parent)
        return check_partial(self._open(*mine), p, n_ranks)

    def _open(self, store_root: str, group_file: str | None, name: str | None,
              source: str | None) -> torch.Tensor:  # fmt: skip
        """A tensor on this node: a rank file (memory-mapped), or a stored group's tensor or
        part (a part is a column range of the group's tensor, tensor_store.VIEWS_KEY)."""
        if group_file is None:
            return load_source(source)
        import json

        from safetensors import safe_open

        from studio_backend.workspace.tensor_store import VIEWS_KEY

        with safe_open(str(Path(store_root) / group_file), framework="pt") as f:
            if name in f.keys():
                return f.get_tensor(name)
            base, a, b = json.loads((f.metadata() or {}).get(VIEWS_KEY, "{}"))[name]
            return f.get_tensor(base)[..., a:b]

    def tile(self, store_root: str, group_file: str | None, name: str | None,
             source: str | None, grid_kw: dict[str, Any]):  # fmt: skip
        """A screen-sized LOD grid of one tensor held here (analysis/lod.py), not the tensor."""
        from studio_backend.analysis.lod import build_grid

        return build_grid(self.read(store_root, group_file, name, source), **grid_kw)

    def shared_flags(self, rows: list, tree: dict[str, str], calls: dict[str, int]) -> list:
        """stitch/shared.py over the lowest-rank files, which all lie on this node."""
        from studio_backend.dumps.stitch import shared

        return shared.detect(rows, tree, load_source, calls)

    def tool_stats(self, dump_root: str, folders: list[str], done: dict[str, str]) -> list:
        """msit statistics.csv / msprobe dump.json of this node's rank folders, parsed here:
        [(printable path, relpath, key, size, folder, step, rows | None, error | None,
        error kind | None)]."""
        from studio_backend.dumps.formats import msit, msprobe
        from studio_backend.dumps.pipeline.discover import content_key

        lay = self.layout(dump_root)
        want = set(folders)
        if lay.format == "msit":
            files = [f for n, rf in lay.folders.items() if n in want
                     for f in rf.path.glob("*/*/statistics.csv")]  # fmt: skip
        elif lay.format == "msprobe":
            files = [f for f in lay.root.glob("step*/*/dump.json") if f.parent.name in want]
        else:
            return []
        out = []
        for f in sorted(files):
            if lay.format == "msit":
                folder, step_s = f.parents[2].name, f.parents[1].name
            else:
                folder, step_s = f.parent.name, f.parents[1].name.removeprefix("step")
            bad = file_checks.name_problem(f) or file_checks.not_regular(f)
            if bad:
                out.append((file_checks.printable(f), None, None, 0, folder, step_s, None, bad,
                            "skipped"))  # fmt: skip
                continue
            rel = str(f.relative_to(lay.root))
            try:
                key = content_key(f)
                if done.get(rel) == key:
                    continue
                rows = (msit.read_statistics_csv(f) if lay.format == "msit"
                        else msprobe.read_dump_json_stats(f))  # fmt: skip
                rows = [file_checks.clean_tool_row(r) for r in rows]
            except (InputError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                err = file_checks.side_file_error(f, exc).problem
                out.append((file_checks.printable(f), None, None, 0, folder, step_s, None, err,
                            "unreadable"))  # fmt: skip
                continue
            out.append((str(f), rel, key, f.stat().st_size, folder, step_s, rows, None, None))
        return out


def worker_class(ray: Any) -> Any:
    """``NodeStages`` as a Ray actor class (threaded: catalog and stitches overlap)."""

    @ray.remote(num_cpus=0)
    class NodeWorker(NodeStages):
        def __init__(self) -> None:
            super().__init__(ray.get_runtime_context().get_node_id())
            gc.freeze()  # the long-lived imports are never scanned by the cyclic GC

        def ping(self) -> str:
            return self.node_id

    return NodeWorker
