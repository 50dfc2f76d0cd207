"""Statistics stage: statistics and outliers of each stitched tensor (pure), and their rows."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa

from studio_backend.dumps import stats as stats_mod
from studio_backend.dumps.formats.common import (
    load_source,
)
from studio_backend.dumps.pipeline.stitch_stage import _no_cyclic_gc, _pool
from studio_backend.errors import InputError
from studio_backend.workspace import Workspace


def stats_of(
    store_root: str,
    group_file: str | None,
    name: str | None,
    source: str | None,
    token_dims: int | None = None,
):
    """Statistics of one stitched tensor, read memory-mapped (pure: fits a process pool)."""
    if group_file is None:
        return stats_mod.compute(load_source(source), token_dims=token_dims)
    return stats_of_stored(store_root, group_file, name, token_dims)


def stats_or_problem(
    store_root: str,
    group_file: str | None,
    name: str | None,
    source: str | None,
    token_dims: int | None = None,
) -> stats_mod.TensorStats | str:
    """``stats_of``, or why it failed: one bad tensor must not stop the run's statistics."""
    try:
        return stats_of(store_root, group_file, name, source, token_dims)
    except (InputError, OSError, RuntimeError, ValueError) as exc:
        return f"statistics failed ({type(exc).__name__}: {exc})"


def stats_of_stored(
    store_root: str, group_file: str, name: str, token_dims: int | None = None
) -> stats_mod.TensorStats:
    """Statistics of one stored tensor, read memory-mapped (a pure function for a process pool)."""
    from safetensors import safe_open

    with safe_open(str(Path(store_root) / group_file), framework="pt") as f:
        return stats_mod.compute(f.get_tensor(name), token_dims=token_dims)


_VECTORS = ("channel_absmax", "channel_mean_abs", "token_absmax")


def _float_lists(vectors: list[list[float]]) -> pa.ListArray:
    """FLOAT[] column from Python lists, built from one float32 array (no per-float objects)."""
    lens = np.fromiter((len(v) for v in vectors), np.int64, len(vectors))
    offsets = np.zeros(len(vectors) + 1, np.int32)
    np.cumsum(lens, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(vectors), np.float32, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def write_stats(ws: Workspace, ids: list[int], results: list[stats_mod.TensorStats]) -> None:
    """Record statistics and top outliers of the given tensors (replacing older ones)."""
    rows = [st.as_row() for st in results]
    cols = {"tensor_id": pa.array(ids, pa.int64())}
    for k in rows[0] if rows else ():
        if k in _VECTORS:
            cols[k] = _float_lists([r[k] for r in rows])
        else:
            cols[k] = pa.array([r[k] for r in rows])
    outliers = [
        {"tensor_id": tid, "k": k, "token": tok, "channel": ch, "value": v}
        for tid, st in zip(ids, results, strict=True)
        for k, (tok, ch, v) in enumerate(st.top)
    ]
    with ws.transaction() as cur:
        cur.register("_new_stats", pa.table(cols))
        cur.execute("INSERT OR REPLACE INTO dump_stats BY NAME SELECT * FROM _new_stats")
        cur.unregister("_new_stats")
        cur.execute(
            "DELETE FROM dump_outliers WHERE list_contains(?, tensor_id)", [[int(i) for i in ids]]
        )
        if outliers:
            cur.register("_new_outliers", pa.Table.from_pylist(outliers))
            cur.execute("INSERT OR REPLACE INTO dump_outliers BY NAME SELECT * FROM _new_outliers")
            cur.unregister("_new_outliers")


class StatsStage:
    """Statistics for the stitched tensors that have none (mixed into ``Ingestor``)."""

    # -- statistics ----------------------------------------------------------------------
    def compute_stats(self, limit: int | None = None) -> int:
        """Statistics for stitched tensors that have none yet (at most ``limit``; a pool if given)."""
        from studio_backend.dumps import axis_store

        axis_store.assign(self.ws, self.run_id)  # statistics are computed on the token axis
        todo = (
            self.ws.cursor()
            .execute(
                "SELECT t.tensor_id, t.store_group, t.store_name, t.source_file, a.token_dims "
                "FROM dump_tensors t LEFT JOIN dump_axes a USING (tensor_id) "
                "LEFT JOIN dump_stats s USING (tensor_id) WHERE t.run_id = ? AND t.rank IS NULL AND t.part IS NULL "
                "AND s.tensor_id IS NULL AND NOT list_contains(?, t.tensor_id) "
                "ORDER BY t.tensor_id LIMIT ?",
                [self.run_id, sorted(self._stats_failed), limit if limit is not None else 1 << 62],
            )
            .fetchall()
        )
        if not todo:
            return 0
        root = str(self.ws.tensors.root)
        args = [
            (root, str(self.ws.tensors.path(g).relative_to(self.ws.tensors.root)) if g else None,
             n, src, k)
            for _, g, n, src, k in todo
        ]  # fmt: skip
        if self.stats_pool is not None:
            results = list(self.stats_pool.map(stats_or_problem, *zip(*args, strict=True)))
        elif self.workers > 1 and len(args) > 1:
            with _pool(self.workers) as pool, _no_cyclic_gc():
                results = list(pool.map(stats_or_problem, *zip(*args, strict=True)))
        else:
            results = [stats_or_problem(*a) for a in args]
        for (tid, _g, _n, src, _k), res in zip(todo, results, strict=True):
            if isinstance(res, str):  # recorded once; not retried until the next ingest
                self._stats_failed.add(tid)
                self._error(src or f"tensor {tid}", "stats_failed", res, once=True)
        good = [(t[0], r) for t, r in zip(todo, results, strict=True) if not isinstance(r, str)]
        if good:
            self._write_stats([g[0] for g in good], [g[1] for g in good])
        return len(todo)

    def _write_stats(self, ids: list[int], results: list[stats_mod.TensorStats]) -> None:
        write_stats(self.ws, ids, results)
        self.progress.stats_done += len(ids)
        self._notify()
