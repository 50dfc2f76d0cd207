"""One local Ray cluster for the module's tests: three nodes on 127.0.0.1, each rank folder of
the synthetic TP=4 dump pinned to one node by a ``studio_folder:<folder>`` resource."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# before Ray is imported anywhere: every node of the test cluster binds 127.0.0.1 only
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

# rank folders of studio_backend.dumps.synthetic.write_msit at tp=4, and the node each is pinned to
FOLDERS = ["npu0_4000", "npu1_4001", "npu2_4002", "npu3_4003"]
PINS = {"head": FOLDERS[:2], "b": FOLDERS[2:3], "c": FOLDERS[3:]}
# a killed node is declared dead after ~3 s, not the default ~30 s
HEALTH = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
STORE_MB = 80  # each node's object store: the test dumps are a few hundred KB


def node_args(name: str) -> dict[str, Any]:
    extra = {"_system_config": HEALTH} if name == "head" else {}
    return {
        **extra,
        "num_cpus": 1,
        "resources": {f"studio_folder:{f}": 1 for f in PINS[name]},
        "object_store_memory": STORE_MB << 20,
    }


@dataclass
class LocalCluster:
    cluster: Any
    nodes: dict[str, Any] = field(default_factory=dict)  # name -> ray.cluster_utils node

    @property
    def address(self) -> str:
        return self.cluster.address

    def kill(self, name: str) -> None:
        """SIGKILL the node's processes and the workers they started (a machine gone)."""
        import psutil

        node = self.nodes.pop(name)
        procs = []
        for _kind, p in node.live_processes():
            try:
                procs += psutil.Process(p.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        self.cluster.remove_node(node, allow_graceful=False)
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass

    def revive(self, name: str) -> None:
        # add_node registers the new node's SIGTERM handler in this (the test's) process: the
        # previous one goes back, as every test leaves signal handling as it found it.
        previous = signal.getsignal(signal.SIGTERM)
        try:
            self.nodes[name] = self.cluster.add_node(**node_args(name))
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args=node_args("head"))
    lc = LocalCluster(c, {"head": c.head_node})
    for name in ("b", "c"):
        lc.nodes[name] = c.add_node(**node_args(name))
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield lc
    finally:
        ray.shutdown()
        c.shutdown()
