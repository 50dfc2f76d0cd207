"""``--ray ADDRESS`` for every command that reads dumps (ingest, stitch, stats)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from studio_backend.errors import InputError


def add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", metavar="ADDRESS", default=os.environ.get("STUDIO_RAY_ADDRESS"),
                   help="read the dump where it lies on a Ray cluster (the head's host:port); "
                   "DUMP is then the folder on every node (default: $STUDIO_RAY_ADDRESS)")  # fmt: skip
    p.add_argument("--node-dump", action="append", default=[], metavar="NODE=PATH",
                   help="with --ray: the dump folder on one node (its address or node id "
                   "prefix), where it differs from DUMP; repeatable")  # fmt: skip
    p.add_argument("--ray-store", metavar="DIR",
                   help="with --ray: where each node keeps its stitched tensors (the same path "
                   "on every node; default: DUMP.studio-tensors beside each node's dump)")  # fmt: skip


def node_dumps(specs: list[str]) -> dict[str, str] | None:
    out = {}
    for spec in specs:
        node, sep, path = spec.partition("=")
        if not sep or not node.strip() or not path.strip():
            raise InputError(spec, "--node-dump wants NODE=PATH (NODE: a node's address or id)")
        out[node.strip()] = path.strip()
    return out or None


def ingest(
    ws: Any,
    args: argparse.Namespace,
    *,
    model_config: dict[str, Any] | None,
    with_stats: bool = True,
    name: str | None = None,
    stats_workers: int = 0,
    on_progress: Callable[[Any], None] | None = None,
) -> str:
    """Ingest ``args.dump`` here, or over the Ray cluster at ``args.ray``."""
    address = getattr(args, "ray", None)
    if not address:
        if getattr(args, "node_dump", None):
            raise InputError("--node-dump", "needs --ray ADDRESS (the cluster's head)")
        from studio_backend.dumps.ingest import ingest_dump

        return ingest_dump(ws, args.dump, name, model_config=model_config, with_stats=with_stats,
                           stats_workers=stats_workers, on_progress=on_progress)  # fmt: skip
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray

    return ingest_dump_ray(ws, address, args.dump, name, model_config=model_config,
                           with_stats=with_stats, node_dumps=node_dumps(args.node_dump),
                           store=args.ray_store, on_progress=on_progress)  # fmt: skip
