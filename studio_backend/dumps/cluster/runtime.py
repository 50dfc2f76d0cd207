"""Connecting to a Ray cluster and placing work on the node that holds a rank folder.

Ray is optional (``make ray``): every entry point imports it through ``ray_module`` so a missing
install or an unreachable head is one clear line, never a traceback. Nodes are found by their
Ray node id; a node may also declare the rank folders it holds with custom resources
``studio_folder:<folder>`` (how the tests pin folders on a one-machine cluster, and how a user
pins folders on a shared file system where every node sees every folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from studio_backend.errors import StudioError

FOLDER_RESOURCE = "studio_folder:"  # custom resource naming a rank folder a node holds
ENV_ADDRESS = "STUDIO_RAY_ADDRESS"  # default --ray address (the Dumps page reads it too)


def ray_module() -> Any:
    """The ``ray`` package, or a clear error saying how to install it."""
    # loopback-only nodes (docs/DUMPS.md) must see this before Ray is first imported
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise StudioError(
            "Ray is not installed in this environment: run `make ray` (it installs the pinned "
            "Ray of locks/ray.txt), or drop --ray to ingest on this machine"
        ) from exc
    return ray


def connect(address: str) -> Any:
    """Join the Ray cluster at ``address`` (``host:port`` of the head, or ``auto``) as a driver.

    Joining twice is a no-op. The driver process binds loopback only when the head does
    (docs/DUMPS.md): this never starts a cluster of its own.
    """
    ray = ray_module()
    address = address.strip()
    if not address:
        raise StudioError("--ray needs the head's address (host:port, as `ray status` shows)")
    if address != "auto":
        _host_port(address)
    if ray.is_initialized():
        return ray
    if address != "auto":
        _reachable(address)
    try:
        ray.init(
            address=address, logging_level="ERROR", log_to_driver=False,
            include_dashboard=False, configure_logging=True,
        )  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StudioError(
            f"cannot join the Ray cluster at {address!r} ({msg}): start it with `ray start "
            "--head` on the head node and pass the address `ray status` prints"
        ) from exc
    return ray


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if address.startswith("ray://") or not sep or not port.isdigit() or not host:
        raise StudioError(
            f"--ray {address!r}: give the head's host:port as `ray status` shows it "
            "(e.g. 10.0.0.5:6379); Ray Client addresses (ray://) are not supported"
        )
    return host.strip("[]"), int(port)


def _reachable(address: str, timeout_s: float = 3.0) -> None:
    """Fail in seconds on a wrong address (ray.init would retry the head for minutes)."""
    import socket

    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise StudioError(
            f"cannot reach the Ray head at {address} ({exc.strerror or exc}): is `ray start "
            "--head` running there, and is the port open from this machine?"
        ) from exc


@dataclass(frozen=True)
class Node:
    """One alive Ray node: its id, address, and the rank folders it declares it holds."""

    node_id: str
    address: str
    pinned: frozenset[str] = field(default_factory=frozenset)


def alive_nodes() -> list[Node]:
    """Every alive node of the cluster this process joined, in node-id order (deterministic)."""
    ray = ray_module()
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        pinned = frozenset(
            k[len(FOLDER_RESOURCE) :]
            for k in n.get("Resources", {})
            if k.startswith(FOLDER_RESOURCE)
        )
        out.append(Node(n["NodeID"], n.get("NodeManagerAddress", "?"), pinned))
    return sorted(out, key=lambda n: n.node_id)


def on_node(node_id: str) -> dict[str, Any]:
    """Ray ``.options`` that run a task or actor on exactly that node (never elsewhere: the
    files are only there)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


def assign_folders(seen: dict[str, list[str]], nodes: list[Node]) -> dict[str, str]:
    """folder -> node id: a folder pinned by a node's resource goes there; one only one node
    sees goes to it; one several nodes see (a shared file system) to the least loaded of them.

    ``seen``: node id -> the rank folders that node found under its DUMP. Pure.
    """
    where: dict[str, str] = {}
    by_id = {n.node_id: n for n in nodes}
    for n in nodes:
        for f in sorted(n.pinned):
            where.setdefault(f, n.node_id)
    load = {nid: sum(1 for v in where.values() if v == nid) for nid in seen}
    holders: dict[str, list[str]] = {}
    for nid in sorted(seen):
        for f in seen[nid]:
            holders.setdefault(f, []).append(nid)
    for f in sorted(holders):
        if f in where:
            continue
        # a node that pins other folders (but not this one) does not hold it
        free = [nid for nid in holders[f] if not by_id.get(nid, Node(nid, "")).pinned] or holders[f]
        best = min(free, key=lambda nid: (load[nid], nid))
        where[f] = best
        load[best] += 1
    return where


class NodeLost(StudioError):
    """A node left the cluster while it held part of the dump (its part resumes later)."""

    def __init__(self, run_id: str, message: str) -> None:
        self.run_id = run_id
        super().__init__(message)


def lost_error(exc: BaseException) -> bool:
    """True when a Ray failure means the node (or its worker) is gone, not a bug in a stage."""
    ray = ray_module()
    ex = ray.exceptions
    if isinstance(exc, ex.RayTaskError):
        # a task whose input (a shard from another node) is lost fails with the loss as cause
        cause = getattr(exc, "cause", None)
        return isinstance(cause, ex.RayError) and lost_error(cause)
    return isinstance(exc, ex.RayError)
