"""LRU replay of KV-block accesses: hit ratio against cache capacity, and reuse recency.

A stream is a sequence of steps, each touching a set of blocks (a decode step of one request
over the selected layers, or one request of a prefix trace). The LRU is step-granular: blocks
touched in the same step are equally recent. For an access at step t to a block last touched at
step s, its LRU depth is the number of distinct blocks touched in steps s..t-1 (itself
included); it hits in a cache of C blocks iff depth <= C. Depths are computed for all
capacities at once from a histogram of last-touch steps (O(steps x (steps + blocks))).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _dense_sets(steps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each step's distinct blocks, renumbered densely across the whole stream."""
    if not steps:
        return []
    sets = [np.unique(np.asarray(s, dtype=np.int64)) for s in steps]
    sizes = [len(s) for s in sets]
    _, dense = np.unique(np.concatenate(sets), return_inverse=True)
    return np.split(dense, np.cumsum(sizes)[:-1])


def lru_depths(steps: Sequence[np.ndarray]) -> np.ndarray:
    """LRU depth of every access (distinct blocks of each step, in step order); 0 = cold miss."""
    sets = _dense_sets(steps)
    if not sets:
        return np.zeros(0, np.int64)
    last = np.full(
        max(int(s.max()) for s in sets if len(s)) + 1 if any(len(s) for s in sets) else 0,
        -1,
        np.int64,
    )
    touched_at = np.zeros(len(sets) + 1, np.int64)  # number of blocks whose last touch is step s
    out = []
    for t, ids in enumerate(sets):
        prev = last[ids]
        depth = np.zeros(len(ids), np.int64)
        seen = prev >= 0
        if seen.any():
            # depth for last touch s0 = number of blocks last touched in [s0, t-1]
            suffix = np.cumsum(touched_at[:t][::-1])[::-1]
            depth[seen] = suffix[prev[seen]]
            np.subtract.at(touched_at, prev[seen], 1)
        last[ids] = t
        touched_at[t] += len(ids)
        out.append(depth)
    return np.concatenate(out)


def hit_ratio_curve(depths: np.ndarray, capacities: Sequence[int]) -> np.ndarray:
    """Hit ratio for each capacity (in blocks) given the depths of all accesses."""
    total = len(depths)
    if total == 0:
        return np.zeros(len(capacities))
    d = np.sort(depths[depths > 0])
    return np.searchsorted(d, np.asarray(capacities), side="right") / total


def recency(step_ids: Sequence[int], steps: Sequence[np.ndarray]) -> np.ndarray:
    """For every re-touch of a block, the step distance (``step_ids`` units) to its last touch."""
    if not steps:
        return np.zeros(0, np.int64)
    sets = [np.unique(np.asarray(s, dtype=np.int64)) for s in steps]
    blocks = np.concatenate(sets)
    when = np.repeat(np.asarray(step_ids, dtype=np.int64), [len(s) for s in sets])
    order = np.lexsort((when, blocks))
    b, w = blocks[order], when[order]
    same = b[1:] == b[:-1]
    return (w[1:] - w[:-1])[same]
