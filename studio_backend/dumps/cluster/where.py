"""Read a tensor of a run ingested from a Ray cluster: here if its file is here, else on the
node that holds it: the whole tensor (``load``: an explicit download), or only what a view
needs (``compute``: a ``studio_backend.analysis.views`` operation run as a task pinned to that node,
returning the small result)."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from studio_backend.dumps.cluster import runtime
from studio_backend.dumps.formats.common import load_source, split_source
from studio_backend.errors import StudioError
from studio_backend.workspace import Workspace
from studio_backend.workspace.tensor_store import TensorStore


@dataclass(frozen=True)
class Where:
    """A tensor's place: the rank folder whose node holds it, and its file there."""

    run_id: str
    address: str
    folder: str
    dump_root: str
    store_root: str
    group: str | None
    name: str | None
    source: str | None

    @property
    def group_file(self) -> str | None:
        if self.group is None:
            return None
        store = TensorStore(Path(self.store_root))
        return str(store.path(self.group).relative_to(self.store_root))

    @property
    def local_path(self) -> Path:
        if self.group is not None:
            return Path(self.store_root) / str(self.group_file)
        return split_source(str(self.source))[0]


def locate(ws: Workspace, tensor_id: int) -> Where | None:
    """Where a tensor of a Ray-ingested run lives; None for a run ingested on this machine."""
    row = ws.cursor().execute(
        "SELECT t.run_id, c.address, coalesce(ct.folder, r.folder), f.dump_root, f.store_root, "
        "t.store_group, t.store_name, t.source_file FROM dump_tensors t "
        "JOIN dump_cluster_runs c USING (run_id) "
        "LEFT JOIN dump_cluster_tensors ct ON ct.tensor_id = t.tensor_id AND t.rank IS NULL "
        "LEFT JOIN dump_ranks r ON r.run_id = t.run_id AND r.rank = t.rank "
        "LEFT JOIN dump_cluster_folders f ON f.run_id = t.run_id "
        "AND f.folder = coalesce(ct.folder, r.folder) WHERE t.tensor_id = ?",
        [int(tensor_id)],
    ).fetchone()  # fmt: skip
    if row is None:
        return None
    if row[2] is None or row[4] is None:
        raise StudioError(f"dump tensor {tensor_id}: the workspace does not say which Ray node "
                          "holds it; ingest the dump again with --ray")  # fmt: skip
    return Where(*row)


def read_local(w: Where) -> torch.Tensor | None:
    """The tensor from this machine's disk when its file is here (one file system, or this is
    the node), memory-mapped; None otherwise."""
    if not w.local_path.is_file():
        return None
    if w.group is not None:
        return TensorStore(Path(w.store_root)).get(w.group, str(w.name))
    return load_source(str(w.source))


def load(ws: Workspace, tensor_id: int, address: str | None = None) -> torch.Tensor | None:
    """The tensor (here, or fetched from its node); None: not a Ray-ingested tensor."""
    w = locate(ws, tensor_id)
    if w is None:
        return None
    t = read_local(w)
    return t if t is not None else fetch(w, address)


VIEWS_ENV = "STUDIO_RAY_VIEWS"  # "node": views always ask the node, even when the file is here


def remote(ws: Workspace, tensor_id: int) -> Where | None:
    """Where a tensor of a Ray-ingested run lives when a view must ask its node for it; None
    when it is read here (a run ingested on this machine, or its file is on this machine's
    disk, unless $STUDIO_RAY_VIEWS=node)."""
    w = locate(ws, tensor_id)
    if w is None or (os.environ.get(VIEWS_ENV) != "node" and w.local_path.is_file()):
        return None
    return w


_NODES: dict[tuple[str, str], str] = {}  # (address, file) -> node id that had it
_NODES_LOCK = threading.Lock()


def _address(w: Where, address: str | None) -> str:
    return address or os.environ.get(runtime.ENV_ADDRESS) or w.address


def fetch(w: Where, address: str | None = None, grid_kw: dict[str, Any] | None = None) -> Any:
    """Ask the node holding the tensor's file for it (or for its LOD grid)."""
    addr = _address(w, address)
    ray = runtime.connect(addr)
    fn = _remote_fns(ray)
    nid = _node_of(ray, fn, w, addr)
    args = _args(w)
    if grid_kw is not None:
        return ray.get(fn["tile"].options(**runtime.on_node(nid)).remote(*args, grid_kw))
    ref = fn["read"].options(**runtime.on_node(nid)).remote(*args)
    out = _get(ray, ref, w, addr)
    _account(ray, ref, out)
    return out


def _get(ray: Any, ref: Any, w: Where, addr: str) -> Any:
    """The task's result; a node that died under it is one clear line (the next view asks
    whichever node holds the file then), never a Ray traceback."""
    try:
        return ray.get(ref)
    except Exception as exc:
        if not runtime.lost_error(exc):
            raise
        with _NODES_LOCK:
            _NODES.pop((addr, str(w.local_path)), None)
        raise StudioError(f"{w.local_path}: the Ray node holding it (rank folder {w.folder}) "
                          "stopped answering; view it again once the node is back") from exc  # fmt: skip


def _args(w: Where) -> tuple:
    return (w.store_root, w.group_file, w.name, w.source)


def _node_of(ray: Any, fn: dict[str, Any], w: Where, addr: str) -> str:
    """The id of the alive node whose disk holds the tensor's file (remembered per file)."""
    path = str(w.local_path)
    with _NODES_LOCK:
        nid = _NODES.get((addr, path))
    alive = {n.node_id for n in runtime.alive_nodes()}
    if nid not in alive:
        nid = None
        has = {n: fn["has"].options(**runtime.on_node(n)).remote(path) for n in sorted(alive)}
        for n, ref in has.items():
            try:
                found = ray.get(ref)
            except Exception as exc:
                if not runtime.lost_error(exc):
                    raise
                found = False  # that node went away meanwhile
            if found:
                nid = n
                break
        if nid is None:
            raise StudioError(f"{path}: no node of the Ray cluster at {addr} holds this file "
                              f"(rank folder {w.folder}); is its node up?")  # fmt: skip
        with _NODES_LOCK:
            _NODES[(addr, path)] = nid
    return nid


def compute(ws: Workspace, op: str, ids: list[int], places: list[Where | None],
            recipes: list, kw: dict[str, Any], address: str | None = None) -> Any:  # fmt: skip
    """``views.apply(op, ...)`` as a task pinned to the node holding the first remote tensor;
    only its (compact) result comes back. Another tensor of the view is read there when it is
    on that node, else sent to it: from its own node (node to node, never through here), or
    from this machine when it is here."""
    from studio_backend.analysis import views
    from studio_backend.dumps.query import load_tensor

    first = next(w for w in places if w is not None)
    addr = _address(first, address)
    ray = runtime.connect(addr)
    fn = _remote_fns(ray)
    nid = _node_of(ray, fn, first, addr)
    specs, sent = [], []
    for tid, w in zip(ids, places, strict=True):
        other = None if w is None else _node_of(ray, fn, w, addr)
        if other == nid:
            specs.append(_args(w))
            sent.append(None)
        elif w is None:
            specs.append(None)
            sent.append(ray.put(load_tensor(ws, tid).contiguous()))
        else:
            specs.append(None)
            sent.append(fn["read"].options(**runtime.on_node(other)).remote(*_args(w)))
    ref = fn["view"].options(**runtime.on_node(nid)).remote(op, specs, list(recipes), kw, *sent)
    out = _get(ray, ref, first, addr)
    _account(ray, ref, out)
    return views.expand(out)


# Bytes that came back to this process from nodes, by Ray's own count of each result object
# (the object store's size; a small result travels inline in the task's reply: its pickle).
MOVED: dict[str, Any] = {"calls": 0, "bytes": 0, "last": 0, "by": ""}
_MOVED_LOCK = threading.Lock()


def _account(ray: Any, ref: Any, value: Any) -> None:
    size, by = None, "ray"
    try:
        size = ray.experimental.get_object_locations([ref])[ref].get("object_size")
    except Exception:  # noqa: BLE001 - accounting must never fail a view
        size = None
    if not size:
        import pickle

        size, by = len(pickle.dumps(value, protocol=5)), "pickle"
    with _MOVED_LOCK:
        MOVED["calls"] += 1
        MOVED["bytes"] += int(size)
        MOVED["last"] = int(size)
        MOVED["by"] = by


_FNS: dict[int, dict[str, Any]] = {}


def _remote_fns(ray: Any) -> dict[str, Any]:
    """Ray tasks for reads (plain tasks: a view needs no worker state)."""
    if id(ray) not in _FNS:
        from studio_backend.dumps.cluster.node import NodeStages

        def has(path: str) -> bool:
            return Path(path).is_file()

        def read(*args: Any) -> torch.Tensor:
            return NodeStages().read(*args)

        def tile_(*args: Any) -> Any:
            return NodeStages().tile(*args)

        def view(op: str, specs: list, recipes: list, kw: dict[str, Any], *sent: Any) -> Any:
            from studio_backend.analysis import views

            torch.set_num_threads(1)
            node = NodeStages()
            ts = [node._open(*s) if s is not None else t for s, t in zip(specs, sent, strict=True)]
            return views.compact(views.apply(op, ts, recipes, kw))

        _FNS[id(ray)] = {
            "has": ray.remote(num_cpus=0)(has),
            "read": ray.remote(num_cpus=0)(read),
            "tile": ray.remote(num_cpus=0)(tile_),
            "view": ray.remote(num_cpus=0)(view),
        }
    return _FNS[id(ray)]
