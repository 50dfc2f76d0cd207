"""Discover where a dump lives on a Ray cluster and merge the nodes' views into one layout.

A task on every node looks for DUMP there (the same path on every node, or one path per node)
and reports its rank folders, config and ranks.json: no tensor data. Each rank folder is then
given to exactly one node (runtime.assign_folders), and the merged ``DumpLayout`` is what the
single writer sees: the same ranks, tp and config a one-machine ingest of the whole dump sees.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_backend.dumps import expected
from studio_backend.dumps.cluster import runtime
from studio_backend.dumps.cluster.node import NodeView, worker_class
from studio_backend.dumps.detect import PID_ORDER_NOTE, DumpLayout, _assign_ranks
from studio_backend.errors import InputError, StudioError

STORE_SUFFIX = ".studio-tensors"  # default store of a node: a sibling of its DUMP, same disk


def default_store(dump_root: str) -> str:
    p = Path(dump_root)
    return str(p.parent / f"{p.name}{STORE_SUFFIX}")


@dataclass
class Moved:
    """Bytes that crossed between nodes, counted by payload (pickled size, tensor bytes)."""

    shards: int = 0  # rank tensors pulled to another node for a stitch
    results: int = 0  # rows, statistics, outlier lists, tiles returned to the writer
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, kind: str, n: int) -> None:
        with self._lock:
            setattr(self, kind, getattr(self, kind) + int(n))

    @property
    def total(self) -> int:
        return self.shards + self.results


@dataclass
class Plan:
    """Where each part of one dump is, and a worker on each node that holds a part."""

    address: str
    dumps: dict[str, str]  # node id -> DUMP on that node
    folders: dict[str, str]  # rank folder -> node id
    stores: dict[str, str]  # node id -> where that node writes stitched tensors
    workers: dict[str, Any]  # node id -> NodeWorker actor
    addresses: dict[str, str]  # node id -> node address (for messages)
    driver_node: str
    moved: Moved = field(default_factory=Moved)

    def node_of(self, folder: str) -> str:
        return self.folders[folder]

    def folders_on(self, node_id: str) -> list[str]:
        return sorted(f for f, n in self.folders.items() if n == node_id)

    def count_result(self, node_id: str, obj: Any) -> Any:
        """Count a result that came from another node (returned unchanged)."""
        if node_id != self.driver_node:
            self.moved.add("results", len(pickle.dumps(obj, protocol=5)))
        return obj

    def close(self) -> None:
        ray = runtime.ray_module()
        for w in self.workers.values():
            try:
                ray.kill(w)
            except Exception:  # noqa: BLE001, S110 - a dead node's actor is already gone
                pass
        self.workers.clear()


def _pick_nodes(nodes: list[runtime.Node], node_dumps: dict[str, str] | None, dump: str | None):
    """node id -> DUMP path there. ``node_dumps`` keys are node ids (a prefix is enough) or
    node addresses; without it every node looks at ``dump``."""
    if not node_dumps:
        if not dump:
            raise StudioError("give DUMP (the same path on every node) or --node-dump NODE=PATH")
        return {n.node_id: dump for n in nodes}
    out: dict[str, str] = {}
    for key, path in node_dumps.items():
        hits = [n for n in nodes if n.node_id.startswith(key) or n.address == key]
        if not hits:
            known = ", ".join(f"{n.address} ({n.node_id[:8]})" for n in nodes)
            raise StudioError(f"--node-dump {key}={path}: no alive node {key!r} (nodes: {known})")
        for n in hits:
            out[n.node_id] = path
    return out


def discover(
    address: str,
    dump: str | None,
    model_config: dict[str, Any] | None = None,
    *,
    node_dumps: dict[str, str] | None = None,
    store: str | None = None,
    launch_tp: tuple[int, str] | None = None,
) -> tuple[Plan, DumpLayout]:
    """Find the dump's rank folders on the cluster; start one worker per node holding some."""
    ray = runtime.connect(address)
    nodes = runtime.alive_nodes()
    dumps = _pick_nodes(nodes, node_dumps, dump)
    cls = worker_class(ray)
    workers = {nid: cls.options(**runtime.on_node(nid)).remote() for nid in dumps}
    views: dict[str, NodeView] = {}
    why: list[str] = []
    for nid, ref in {nid: w.discover.remote(dumps[nid], model_config)
                     for nid, w in workers.items()}.items():  # fmt: skip
        got = ray.get(ref)
        (views.__setitem__(nid, got) if isinstance(got, NodeView) else why.append(got))
    by_addr = {n.node_id: n.address for n in nodes}
    if not views:
        for w in workers.values():
            ray.kill(w)
        raise InputError(dump or ", ".join(sorted(set(dumps.values()))),
                         "no node of the Ray cluster holds this dump: " + "; ".join(sorted(set(why))))  # fmt: skip
    fmts = {v.format for v in views.values()}
    if len(fmts) > 1:
        raise InputError(dump or "DUMP", f"the nodes hold dumps of different tools: {sorted(fmts)}")
    where = runtime.assign_folders(
        {nid: [f.folder for f in v.folders] for nid, v in views.items()},
        [n for n in nodes if n.node_id in views],
    )
    for nid in list(workers):  # a node holding no folder of this dump needs no worker
        if nid not in where.values():
            ray.kill(workers.pop(nid))
    plan = Plan(
        address, {nid: dumps[nid] for nid in workers}, where,
        {nid: store or default_store(dumps[nid]) for nid in workers}, workers,
        {nid: by_addr.get(nid, "?") for nid in workers},
        ray.get_runtime_context().get_node_id(),
    )  # fmt: skip
    return plan, merge(list(views.values()), where, model_config, launch_tp)


def merge(
    views: list[NodeView],
    where: dict[str, str],
    model_config: dict[str, Any] | None,
    launch_tp: tuple[int, str] | None = None,
) -> DumpLayout:
    """One layout from the nodes' views: each folder as its assigned node sees it. Pure."""
    views = sorted(views, key=lambda v: v.node_id)
    folders = {}
    ranks_json = next((v.ranks_json for v in views if v.ranks_json is not None), None)
    cfg = model_config or next((v.model_config for v in views if v.model_config), None)
    classes: dict[str, str] = {}
    shapes: list = []
    for v in views:
        classes.update(v.classes)
        shapes += v.probe_shapes
        for f in v.folders:
            if where.get(f.folder) == v.node_id:
                folders[f.folder] = f
    ranks, rank_source = _assign_ranks(list(folders.values()), ranks_json)
    note = PID_ORDER_NOTE if rank_source == "pids" and len(ranks) > 1 else ""
    first = views[0]
    extra: dict[str, Any] = {"classes": classes} if first.format == "msprobe" else {}
    layout = DumpLayout(first.format, Path(first.root), ranks, folders, cfg, note, extra)
    problems = {tuple(p) for v in views for p in v.side_problems}
    layout.extra.update(side_problems=sorted(problems), launch_tp=launch_tp,
                        rank_source=rank_source)  # fmt: skip
    # expected.of_layout, from the shapes the nodes probed (the writer opens no dump file)
    heads = expected.heads_of(cfg)
    layout.extra["expected"] = expected.decide(
        present=len(set(ranks.values())),
        ranks_json=expected.ranks_json_count(ranks_json),
        folder_ranks=[rf.rank for rf in folders.values()],
        widths=expected.tp_from_widths(heads, shapes) if heads else None,
        launch=launch_tp,
    )
    layout.fit_device_ranks()
    return layout
