"""Point C of seed 004: where each touched KV block would be fetched from, per tier.

A ``TierStats`` turns the blocks one (request, layer, step) touches into the ``kv_fetch``
object of a trace record. ``HbmOnly`` is seed 004's default (every block is an HBM hit,
local/remote pools empty); ``LruTiers`` is a labelled *simulation* of an HBM LRU cache in front
of a local pool and a remote pool, to exercise the tier breakdown before real external KV exists.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from studio_backend.dsa.schema import TIERS


def empty_tier() -> dict[str, Any]:
    return {"hit_blocks": [], "bytes_read": 0, "read_ops": 0, "latency_us": None, "batch_size": 0}


class TierStats(Protocol):
    """Pluggable fetch accounting: blocks touched by one record -> ``kv_fetch`` dict."""

    name: str

    def fetch(
        self, *, request_id: int, layer_id: int, block_ids: Sequence[int], block_size: int
    ) -> dict[str, dict[str, Any]]: ...


@dataclass
class HbmOnly:
    """Seed 004's default: all blocks are read from HBM in one batched read."""

    bytes_per_token: int = 0
    name: str = "hbm_only"

    def fetch(
        self, *, request_id: int, layer_id: int, block_ids: Sequence[int], block_size: int
    ) -> dict[str, dict[str, Any]]:
        blocks = list(block_ids)
        out = {t: empty_tier() for t in TIERS}
        out["hbm"] = {
            "hit_blocks": blocks,
            "bytes_read": int(self.bytes_per_token * len(blocks) * block_size),
            "read_ops": 1 if blocks else 0,
            "latency_us": None,  # the tracer fills in the step's wall time
            "batch_size": len(blocks),
        }
        return out


class LruTiers:
    """SIMULATION: per-request LRU caches of (layer, block) in HBM and in a local pool.

    A block found in HBM is an HBM hit; else in the local pool a local hit (promoted to HBM);
    else it comes from the remote pool. Latencies are modelled as ``op_us + bytes / GBps``.
    """

    name = "lru_sim"

    def __init__(
        self,
        hbm_blocks: int,
        local_blocks: int,
        bytes_per_token: int = 0,
        local_op_us: float = 5.0,
        local_gbps: float = 20.0,
        remote_op_us: float = 50.0,
        remote_gbps: float = 5.0,
    ) -> None:
        self.hbm_blocks = hbm_blocks
        self.local_blocks = local_blocks
        self.bytes_per_token = bytes_per_token
        self.cost = {
            "local_pool": (local_op_us, local_gbps),
            "remote_pool": (remote_op_us, remote_gbps),
        }
        self._hbm: dict[int, OrderedDict[tuple[int, int], None]] = {}
        self._local: dict[int, OrderedDict[tuple[int, int], None]] = {}

    @staticmethod
    def _touch(cache: OrderedDict, key: tuple[int, int], cap: int) -> tuple[int, int] | None:
        cache[key] = None
        cache.move_to_end(key)
        if len(cache) > cap:
            return cache.popitem(last=False)[0]
        return None

    def fetch(
        self, *, request_id: int, layer_id: int, block_ids: Sequence[int], block_size: int
    ) -> dict[str, dict[str, Any]]:
        hbm = self._hbm.setdefault(request_id, OrderedDict())
        local = self._local.setdefault(request_id, OrderedDict())
        hits: dict[str, list[int]] = {t: [] for t in TIERS}
        for b in block_ids:
            key = (layer_id, int(b))
            if key in hbm:
                hits["hbm"].append(int(b))
            elif key in local:
                hits["local_pool"].append(int(b))
                del local[key]
            else:
                hits["remote_pool"].append(int(b))
            evicted = self._touch(hbm, key, self.hbm_blocks)
            if evicted is not None:
                self._touch(local, evicted, self.local_blocks)
        out = {}
        for tier in TIERS:
            blocks = hits[tier]
            nbytes = int(self.bytes_per_token * len(blocks) * block_size)
            latency = None
            if tier != "hbm" and blocks:
                op_us, gbps = self.cost[tier]
                latency = int(round(op_us + nbytes / (gbps * 1e3)))
            out[tier] = {
                "hit_blocks": blocks,
                "bytes_read": nbytes,
                "read_ops": 1 if blocks else 0,
                "latency_us": latency,
                "batch_size": len(blocks),
            }
        return out
