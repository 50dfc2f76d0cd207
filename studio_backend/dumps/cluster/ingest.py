"""The single writer, fed by workers on the nodes that hold the dump (docs/DUMPS.md).

``ClusterIngestor`` is the local ``Ingestor`` with its file-touching stages sent to the node of
each rank folder: listing, catalog, stitch (shards of other nodes pulled through Ray's object
store), statistics, shared-module checks and tool statistics. Only rows, statistics, outlier
lists and dtype/shape stand-ins come back, so the workspace rows are the ones a one-machine
ingest writes. A node that drops out is reported (``node_lost``): nothing of its part is
recorded, so the next ingest (same command) picks it up; the rest is never redone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from studio_backend.dumps import expected, run_checks
from studio_backend.dumps.cluster import runtime
from studio_backend.dumps.cluster.plan import Plan, discover
from studio_backend.dumps.detect import DumpLayout
from studio_backend.dumps.ingest import CatalogEntry, Ingestor, Progress, StitchJob
from studio_backend.errors import InputError
from studio_backend.workspace import Workspace
from studio_backend.workspace.tensor_store import TensorStore

IN_FLIGHT = 3  # catalog batches queued per node (bounds what waits in the object store)


class ClusterIngestor(Ingestor):
    """Ingests one dump spread over a Ray cluster into one run (this process writes)."""

    def __init__(self, ws: Workspace, layout: DumpLayout, plan: Plan, name: str | None = None,
                 *, workers: int = 2, on_progress: Callable[[Progress], None] | None = None) -> None:  # fmt: skip
        self.plan = plan
        self.lost: dict[str, str] = {}  # rank folder -> why its node is gone
        self._stitched_on: dict[str, str] = {}  # stitch key -> folder of the node holding it
        self._pending_nodes: list[tuple[int, str, str]] = []
        self._nbytes: dict[str, int] = {}  # source -> bytes (what a shard pull moves)
        super().__init__(ws, layout, name, workers=workers, on_progress=on_progress)
        self._rank_folder = {r: f for f, r in layout.ranks.items()}
        self._record_cluster()

    # -- bookkeeping ---------------------------------------------------------------------
    def _record_cluster(self) -> None:
        p = self.plan
        with self.ws.transaction() as cur:
            cur.execute("DELETE FROM dump_ingest_errors WHERE run_id = ? AND kind = 'node_lost'",
                        [self.run_id])  # fmt: skip
            cur.execute("INSERT OR REPLACE INTO dump_cluster_runs VALUES (?, ?)",
                        [self.run_id, p.address])  # fmt: skip
            cur.executemany(
                "INSERT OR REPLACE INTO dump_cluster_folders VALUES (?, ?, ?, ?, ?)",
                [[self.run_id, f, p.dumps[n], p.stores[n], p.addresses[n]]
                 for f, n in sorted(p.folders.items())],
            )  # fmt: skip

    def _node_lost(self, folders: list[str], exc: BaseException) -> None:
        """Report the folders whose node is gone; their work is simply not recorded."""
        if not runtime.lost_error(exc):
            raise exc
        for f in folders:
            if f in self.lost:
                continue
            nid = self.plan.folders.get(f, "?")
            why = (f"the Ray node {self.plan.addresses.get(nid, '?')} ({nid[:8]}) holding rank "
                   f"folder {f} left the cluster ({type(exc).__name__}); its files are not "
                   "ingested yet: run the same ingest again once the node is back (what is "
                   "done is kept)")  # fmt: skip
            self.lost[f] = why
            rf = self.layout.folders.get(f)
            self._error(rf.path if rf else f, "node_lost", why, once=True)

    def _ray(self):  # noqa: ANN202
        return runtime.ray_module()

    def _get(self, ref: Any, node_id: str) -> Any:
        return self.plan.count_result(node_id, self._ray().get(ref))

    # -- the writer's extra table --------------------------------------------------------
    def _write(self, **rows: list) -> None:
        if "reports" in rows and self._pending_nodes:  # the same transaction as the tensors
            rows["nodes"], self._pending_nodes = self._pending_nodes, []
        super()._write(**rows)

    def _commit_rows(self, cur, rows: dict[str, list]) -> None:  # noqa: ANN001
        super()._commit_rows(cur, rows)
        if nodes := rows.get("nodes"):
            df = pd.DataFrame(nodes, columns=["tensor_id", "run_id", "folder"])
            cur.register("_new_nodes", df)
            cur.execute("INSERT OR REPLACE INTO dump_cluster_tensors SELECT * FROM _new_nodes")
            cur.unregister("_new_nodes")

    # -- tool statistics -----------------------------------------------------------------
    def ingest_tool_stats(self) -> int:
        if self.layout.format not in ("msit", "msprobe"):
            return 0
        ray, p = self._ray(), self.plan
        refs = {nid: w.tool_stats.remote(p.dumps[nid], p.folders_on(nid), self._done)
                for nid, w in p.workers.items()}  # fmt: skip
        n = 0
        for nid, ref in refs.items():
            try:
                found = self._get(ref, nid)
            except ray.exceptions.RayError as exc:
                self._node_lost(p.folders_on(nid), exc)
                continue
            for path, rel, key, size, folder, step_s, rows, err, kind in found:
                if err is not None:
                    self._error(path, kind, err, once=True)
                    continue
                with self.ws.transaction() as cur:
                    cur.executemany(
                        "INSERT INTO dump_tool_stats (run_id, rank, step, module, module_class, io, idx, "
                        "dtype, shape, max, min, mean, l2, source_file, arg_name) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [[self.run_id, self.layout.ranks.get(folder), int(step_s) if step_s.isdigit() else None,
                          r["module"], r["module_class"], r["io"], r["idx"], r["dtype"], r["shape"],
                          r["max"], r["min"], r["mean"], r["l2"], path, r.get("arg_name")] for r in rows],
                    )  # fmt: skip
                    cur.execute(
                        "INSERT OR REPLACE INTO dump_ingest_files (run_id, relpath, content_key, size, status) "
                        "VALUES (?, ?, ?, ?, 'ingested')", [self.run_id, rel, key, size],
                    )  # fmt: skip
                self._done[rel] = key
                n += len(rows)
        return n

    # -- catalog and stitch, overlapped across nodes -------------------------------------
    def ingest_all(self, paths: Any = None, batch_files: int = 48, flush_s: float = 1.0) -> None:
        """Catalog every node's files (in batches, a few in flight per node) and stitch each
        tensor as soon as its ranks are catalogued; ``paths`` is ignored (the nodes list)."""
        ray, p = self._ray(), self.plan
        done = {k for (k,) in self.ws.cursor().execute(
            "SELECT stitch_key FROM dump_stitch_report WHERE run_id = ?", [self.run_id]).fetchall()}  # fmt: skip
        heads, tp = expected.heads_of(self.layout.model_config), self.layout.tp_size
        self._groups, self._complete, self._batched = {}, [], {}
        listing = {w.list_files.remote(p.dumps[nid], p.folders_on(nid)): nid
                   for nid, w in p.workers.items()}  # fmt: skip
        queues: dict[str, list[list[tuple[str, str]]]] = {}
        inflight: dict[Any, tuple[str, str, Any]] = {}  # ref -> (kind, node, payload)
        for ref, nid in listing.items():
            try:
                listed = self._get(ref, nid)
            except ray.exceptions.RayError as exc:
                self._node_lost(p.folders_on(nid), exc)
                continue
            for path, kind, msg in listed.notes:
                self._error(path, kind, msg, once=kind == "skipped")
            # every file goes: the node compares content keys, so a rewritten file is redone
            files = [(f, rel) for _k, f, rel in listed.files]
            queues[nid] = [files[i : i + batch_files] for i in range(0, len(files), batch_files)]
            self.progress.files_seen += len(files)

        def feed(nid: str) -> None:
            q = queues.get(nid)
            while (
                q and sum(1 for k, n, _ in inflight.values() if k == "cat" and n == nid) < IN_FLIGHT
            ):
                batch = q.pop(0)
                sub = {rel: self._done[rel] for _f, rel in batch if rel in self._done}
                ref = p.workers[nid].catalog.remote(p.dumps[nid], batch, sub)
                inflight[ref] = ("cat", nid, batch)

        try:
            for nid in queues:
                feed(nid)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                kind, nid, payload = inflight.pop(ready[0])
                if kind == "cat":
                    try:
                        entries, notes, bad = self._get(ready[0], nid)
                    except ray.exceptions.RayError as exc:
                        self._node_lost(p.folders_on(nid), exc)
                        queues.pop(nid, None)
                        continue
                    self._take_catalog(entries, notes, bad)
                    for job in self._complete:
                        if job.key not in done and not self._touches_lost(job):
                            ref, snid = self._submit_stitch(job, tp, heads)
                            inflight[ref] = ("stitch", snid, job)
                    self._complete = []
                    feed(nid)
                else:
                    res = self._stitch_result(ready[0], nid, payload)
                    if res is not None:
                        self._write_stitched([res])
                if time.monotonic() - self._last_flush > flush_s:
                    self._flush()
        finally:
            try:
                self._flush()
            except Exception:
                self._batched = None
                self._done = self._load_done()
                raise
            finally:
                self._groups, self._batched = None, None
        self.stitch_ready(final=True)

    def _take_catalog(self, entries: list, notes: list, bad: list) -> None:
        for path, kind, msg in notes:
            self._error(path, kind, msg, once=kind == "skipped")
        if bad:
            self._write(files=[(self.run_id, rel, key, size, "error") for rel, key, size in bad])
            for rel, key, _size in bad:
                self._done[rel] = key
        cat = []
        for e, err in entries:
            e: CatalogEntry
            if err is not None:
                e.error = InputError(e.ref.path, err)
            else:
                self._nbytes[e.ref.source] = e.nbytes
            cat.append(e)
        self._write_catalog(cat)
        self._notify()

    def _submit_stitch(self, job: StitchJob, tp: int, heads: Any) -> tuple[Any, str]:
        """Run one stitch on the node holding most of its ranks; the others' shards travel."""
        p = self.plan
        node = {r: p.folders[self._rank_folder[r]] for r in job.files}
        count: dict[str, int] = {}
        for r in sorted(node):
            count[node[r]] = count.get(node[r], 0) + 1
        first = node[min(node)]
        best = max(count, key=lambda n: (count[n], n == first))
        pulled = [job.files[r] for r in sorted(node) if node[r] != best]
        shards = [p.workers[node[r]].take.remote(job.files[r])
                  for r in sorted(node) if node[r] != best]  # fmt: skip
        for src in pulled:
            p.moved.add("shards", self._shard_bytes(src))
        here = min(r for r in node if node[r] == best)
        self._stitched_on[job.key] = self._rank_folder[here]
        ref = p.workers[best].stitch.remote(job, tp, heads, self.run_id, p.stores[best], pulled,
                                            *shards)  # fmt: skip
        return ref, best

    def _shard_bytes(self, source: str) -> int:
        n = self._nbytes.get(source)
        if n is None:
            row = self.ws.cursor().execute(
                "SELECT nbytes FROM dump_tensors WHERE run_id = ? AND source_file = ? LIMIT 1",
                [self.run_id, source]).fetchone()  # fmt: skip
            n = int(row[0]) if row else 0
        return n

    def _stitch_result(self, ref: Any, nid: str, job: StitchJob):  # noqa: ANN202
        try:
            return self._get(ref, nid)
        except self._ray().exceptions.RayError as exc:
            # the stitch node or a node a shard came from is gone: report it, redo next time
            p = self.plan
            nodes = {p.folders[self._rank_folder[r]] for r in job.files}
            gone = [n for n in sorted(nodes) if not self._answers(n)] or [nid]
            self._node_lost(sorted(f for n in gone for f in p.folders_on(n)), exc)
            return None

    def _answers(self, node_id: str, timeout_s: float = 10.0) -> bool:
        """Whether the node's worker still answers (a dead one fails or times out)."""
        ray = self._ray()
        try:
            ray.get(self.plan.workers[node_id].ping.remote(), timeout=timeout_s)
        except ray.exceptions.RayError:
            return False
        return True

    def _touches_lost(self, job: StitchJob) -> bool:
        return any(self._rank_folder.get(r) in self.lost for r in job.files)

    def _safe_stitch(self, job: StitchJob, tp: int, heads: Any):  # noqa: ANN202
        """The final pass's stitches (stitch_ready): one Ray round trip each."""
        if self._touches_lost(job):
            return None
        ref, nid = self._submit_stitch(job, tp, heads)
        return self._stitch_result(ref, nid, job)

    def _write_stitched(self, results: list) -> None:
        results = [r for r in results if r is not None]
        tid = self._next_id
        for job, _choice, res, loc in results:
            if loc is None or res.tensor is None:
                continue
            if loc.source_file is not None:  # a rank file: it lives with that rank's folder
                rank = next(r for r, f in job.files.items() if f == loc.source_file)
                folder = self._rank_folder[rank]
            else:
                folder = self._stitched_on[job.key]
            for _ in range(1 + len(res.parts)):
                self._pending_nodes.append((tid, self.run_id, folder))
                tid += 1
        super()._write_stitched(results)
        self._pending_nodes = []

    def verify_partial_sums(self, final: bool = False) -> int:
        # a parent or partial may be on the node that is gone: checked by the next ingest
        return 0 if self.lost else super().verify_partial_sums(final)

    def _check_partial(self, tid: int, parent_tid: int, n_ranks: int):  # noqa: ANN202
        """On the node holding the summed partial; the parent's tensor travels only when it is
        stitched elsewhere (counted)."""
        from studio_backend.dumps.cluster import where

        p = self.plan
        a, b = where.locate(self.ws, tid), where.locate(self.ws, parent_tid)
        na, nb = p.folders.get(a.folder), p.folders.get(b.folder)
        if na is None or nb is None:  # not read by this plan's nodes: the generic path
            return super()._check_partial(tid, parent_tid, n_ranks)
        args_a = (a.store_root, a.group_file, a.name, a.source)
        args_b = (b.store_root, b.group_file, b.name, b.source)
        parent: Any = args_b
        if nb != na:
            parent = p.workers[nb].read.remote(*args_b)
            (nbytes,) = self.ws.cursor().execute(
                "SELECT nbytes FROM dump_tensors WHERE tensor_id = ?", [parent_tid]).fetchone()  # fmt: skip
            p.moved.add("shards", int(nbytes))
        return self._get(p.workers[na].check_partial.remote(args_a, parent, n_ranks), na)

    def stitch_ready(self, final: bool = False) -> int:
        # with a node gone, the missing ranks are not missing: no verdicts for them yet
        return super().stitch_ready(final=final and not self.lost)

    def flag_shared_modules(self) -> int:
        def detect(rows: list, tree: dict[str, str], calls: dict[str, int]) -> list:
            node = self._node_of_sources([r.source_file for r in rows])
            if node is not None:
                return self._get(
                    self.plan.workers[node].shared_flags.remote(rows, tree, calls), node
                )
            from studio_backend.dumps.stitch import shared

            return shared.detect(rows, tree, self._read_source, calls)

        return run_checks.flag_shared_modules(self.ws, self.run_id, self.layout, detect=detect)

    def _node_of_sources(self, sources: list[str]) -> str | None:
        """The one node holding all these rank files, or None if they are spread out."""
        if not sources:
            return None
        ranks = dict(self.ws.cursor().execute(
            "SELECT source_file, any_value(rank) FROM dump_tensors WHERE run_id = ? AND rank IS NOT "
            "NULL AND list_contains(?, source_file) GROUP BY 1", [self.run_id, sources]).fetchall())  # fmt: skip
        nodes = {self.plan.folders[self._rank_folder[r]] for r in ranks.values()}
        return nodes.pop() if len(nodes) == 1 else None

    def _read_source(self, source: str) -> Any:
        node = self._node_of_sources([source])
        if node is None:
            raise InputError(source, "not a rank file of this run")
        t = self._ray().get(self.plan.workers[node].read.remote("", None, None, source))
        if node != self.plan.driver_node:
            self.plan.moved.add("results", t.numel() * t.element_size())
        return t

    # -- statistics ----------------------------------------------------------------------
    def compute_stats(self, limit: int | None = None, chunk: int = 64) -> int:
        """Statistics on the node holding each stitched tensor; only the numbers travel."""
        from studio_backend.dumps import axis_store

        ray, p = self._ray(), self.plan
        axis_store.assign(self.ws, self.run_id)
        todo = self.ws.cursor().execute(
            "SELECT t.tensor_id, t.store_group, t.store_name, t.source_file, a.token_dims, c.folder "
            "FROM dump_tensors t LEFT JOIN dump_axes a USING (tensor_id) "
            "LEFT JOIN dump_stats s USING (tensor_id) LEFT JOIN dump_cluster_tensors c USING (tensor_id) "
            "WHERE t.run_id = ? AND t.rank IS NULL AND t.part IS NULL AND s.tensor_id IS NULL "
            "AND NOT list_contains(?, t.tensor_id) ORDER BY t.tensor_id LIMIT ?",
            [self.run_id, sorted(self._stats_failed), limit if limit is not None else 1 << 62],
        ).fetchall()  # fmt: skip
        by_node: dict[str, list[tuple]] = {}
        for tid, g, n, src, k, folder in todo:
            if folder is None or folder not in p.folders or folder in self.lost:
                continue  # its node is gone (reported): computed by the next ingest
            nid = p.folders[folder]
            store = p.stores[nid]
            gf = str(TensorStore(Path(store)).path(g).relative_to(store)) if g else None
            by_node.setdefault(nid, []).append((tid, src, (store, gf, n, src, k)))
        inflight = {}
        for nid, items in by_node.items():
            for i in range(0, len(items), chunk):
                part = items[i : i + chunk]
                inflight[p.workers[nid].stats.remote([a for _t, _s, a in part])] = (nid, part)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            nid, part = inflight.pop(ready[0])
            try:
                results = self._get(ready[0], nid)
            except ray.exceptions.RayError as exc:
                self._node_lost(p.folders_on(nid), exc)
                continue
            good = []
            for (tid, src, _a), res in zip(part, results, strict=True):
                if isinstance(res, str):
                    self._stats_failed.add(tid)
                    self._error(src or f"tensor {tid}", "stats_failed", res, once=True)
                else:
                    good.append((tid, res))
            if good:
                self._write_stats([t for t, _ in good], [r for _, r in good])
        return len(todo)


def ingest_dump_ray(
    ws: Workspace,
    address: str,
    dump_root: str | Path | None,
    name: str | None = None,
    *,
    model_config: dict[str, Any] | None = None,
    with_stats: bool = True,
    workers: int = 2,
    node_dumps: dict[str, str] | None = None,
    store: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    plan_out: list | None = None,
) -> str:
    """``ingest_dump`` over a Ray cluster: the dump stays where it is. Returns the run id;
    raises ``runtime.NodeLost`` (after recording everything else) if a node dropped out."""
    from studio_backend.dumps.launch_record import launch_tp_for

    launch_tp = launch_tp_for(ws, dump_root) if dump_root else None
    plan, layout = discover(address, str(dump_root) if dump_root else None, model_config,
                            node_dumps=node_dumps, store=store, launch_tp=launch_tp)  # fmt: skip
    if plan_out is not None:
        plan_out.append(plan)
    from studio_backend.dumps.no_steps import require_steps

    try:
        require_steps(layout)
        ing = ClusterIngestor(ws, layout, plan, name, workers=workers, on_progress=on_progress)
        ing.ingest_tool_stats()
        ing.ingest_all(None)
        if with_stats:
            ing.compute_stats()
        if ing.lost:
            ws.log("ingest", f"dump {ing.run_id} on Ray {address}: node(s) lost, resumable")
            raise runtime.NodeLost(
                ing.run_id,
                f"{len(ing.lost)} rank folder(s) were on a node that left the cluster "
                f"({', '.join(sorted(ing.lost))}); everything else is ingested. Run the same "
                "command again when the node is back: only the missing part is done.",
            )
        ing.finish("done")
        pr = ing.progress
        ws.log("ingest", f"dump {ing.run_id} ({layout.format}, tp={layout.tp_size}) on Ray "
                         f"{address}, {len(plan.workers)} node(s): {pr.files_done} files, "
                         f"{pr.stitched} tensors stitched, {pr.errors} errors, "
                         f"{plan.moved.total} bytes moved between nodes")  # fmt: skip
        return ing.run_id
    finally:
        plan.close()
