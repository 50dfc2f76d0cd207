"""Stitch stage: one module group's rank tensors made whole (pure ``run_stitch``), and the writer's side."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from studio_backend.dumps import expected, revisions, run_checks
from studio_backend.dumps.formats.common import (
    layer_of,
    load_source,
    source_path,
)
from studio_backend.dumps.stitch.rules import choose
from studio_backend.dumps.stitch.stitcher import Heads, StitchResult, stitch
from studio_backend.errors import InputError


def stitch_key(run_id: str, step: int, module: str, io: str, idx: int, arg: Any, call: Any) -> str:
    return f"{run_id}|{step}|{module}|{io}|{idx}|{arg or ''}|{int(call or 0)}"


def stitched_group(
    run_id: str, step: int, module: str, io: str, idx: int, arg: Any, call: Any
) -> str:
    g = f"dumps/{run_id}/step{step}/{module}/{io}{idx}"
    if arg:
        g += f".{arg}"
    if call:
        g += f".c{int(call)}"
    return g


@dataclass
class StitchJob:
    key: str
    step: int
    module: str
    module_class: str | None
    io: str
    idx: int
    arg_name: str | None
    call_index: int
    files: dict[int, str]  # rank -> source file


_SWITCH_LOCK = threading.Lock()


_switch_users = 0


_switch_saved = 0.005


@contextmanager
def _short_gil_switch(interval_s: float = 0.001) -> Iterator[None]:
    """Hand the GIL over sooner while ingest_all runs (restored after; nests across threads).

    A stitch thread returning from a GIL-free copy waits for the GIL while this thread reads
    headers in Python; with the default 5 ms switch interval those waits dominated (measured:
    ingest_all 15 % faster at 1 ms, docs/PERFORMANCE.md).
    """
    global _switch_users, _switch_saved
    with _SWITCH_LOCK:
        if _switch_users == 0:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(min(interval_s, _switch_saved))
        _switch_users += 1
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


_GC_LOCK = threading.Lock()
_gc_users = 0
_gc_was_enabled = False


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while ingest_all runs (restored after; nests).

    The rows, jobs and results an ingest creates hold no cycles worth collecting, yet the
    collector's passes over them took ~4 % of the ingest's CPU (perf, docs/PERFORMANCE.md);
    reference counting still frees everything, and cycles are collected once it is back on.
    """
    global _gc_users, _gc_was_enabled
    with _GC_LOCK:
        if _gc_users == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_users += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_users -= 1
            if _gc_users == 0 and _gc_was_enabled:
                gc.enable()


def _single_threaded_torch() -> None:
    torch.set_num_threads(1)  # this thread only: OpenMP keeps one thread count per thread


def _pool(workers: int) -> ThreadPoolExecutor:
    """Worker threads whose torch ops run single-threaded: ``workers`` threads each splitting
    its ops over every core would oversubscribe the cores (OpenMP teams then spin-wait)."""
    return ThreadPoolExecutor(workers, initializer=_single_threaded_torch)


def run_stitch(
    job: StitchJob,
    tp: int,
    heads: Heads | None,
    store,
    run_id: str,
    mapped: dict[str, Any] | None = None,
) -> tuple[StitchJob, Any, StitchResult, Location | None]:
    """Stitch one tensor across ranks and write it to the store; pure apart from that write.

    ``mapped`` holds tensors the catalog already memory-mapped (taken out, not loaded twice).
    """
    choice = choose(job.module, job.module_class, job.io, job.idx)
    mapped = mapped if mapped is not None else {}
    shards = {}
    for r, f in job.files.items():
        t = mapped.pop(f, None)
        shards[r] = t if t is not None else load_source(f)
    res = stitch(choice, shards, tp, heads)
    loc: Location | None = None
    if res.tensor is not None and res.verdict in ("verified", "assumed"):
        same = [r for r, t in shards.items() if t is res.tensor]
        if same:
            # Replicated (proven equal) or a single rank: the stitched tensor IS a rank file's
            # tensor. It is read memory-mapped from there, like the rank tensors, not copied.
            loc = Location(None, job.files[same[0]])
        else:
            group = stitched_group(run_id, job.step, job.module, job.io, job.idx, job.arg_name,
                           job.call_index)  # fmt: skip
            views = {name: ("tensor", a, b) for name, (a, b) in res.part_slices.items()}
            store.put(
                group, {"tensor": res.tensor}, metadata={"rule": res.rule, "verdict": res.verdict},
                views=views,
            )  # fmt: skip
            loc = Location(group, None)
    return job, choice, res, loc


@dataclass(frozen=True)
class Location:
    """Where a stitched tensor is read from: a store group, or the rank file it equals."""

    group: str | None
    source_file: str | None


class StitchStage:
    """Stitching every complete group and recording the results (mixed into ``Ingestor``)."""

    # -- stitching -----------------------------------------------------------------------
    def _jobs(self) -> tuple[list[StitchJob], list[StitchJob]]:
        """(ready, incomplete) groups of rank tensors not stitched yet."""
        df = (
            self.ws.cursor()
            .execute(
                """
            SELECT step, module, any_value(module_class) AS module_class, io, idx, arg_name,
                   call_index, list(rank ORDER BY rank) AS ranks,
                   list(source_file ORDER BY rank) AS files
            FROM dump_tensors t
            WHERE run_id = ? AND rank IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM dump_stitch_report r WHERE r.stitch_key =
                  t.run_id || '|' || t.step || '|' || t.module || '|' || t.io || '|' || t.idx
                  || '|' || coalesce(t.arg_name, '') || '|' || coalesce(t.call_index, 0))
            GROUP BY step, module, io, idx, arg_name, call_index
            ORDER BY step, module, io, idx
            """,
                [self.run_id],
            )
            .fetchall()
        )
        tp = self.layout.tp_size
        ready, incomplete = [], []
        for step, module, cls, io, idx, arg, call, ranks, files in df:
            job = StitchJob(
                stitch_key(self.run_id, step, module, io, idx, arg, call), step, module, cls, io,
                idx, arg, int(call or 0), dict(zip(ranks, files, strict=True)),
            )  # fmt: skip
            (ready if sorted(ranks) == list(range(tp)) else incomplete).append(job)
        return ready, incomplete

    def stitch_ready(self, final: bool = False) -> int:
        """Stitch every tensor whose ranks are all present; with ``final`` flag the rest."""
        if not self._settle_tp(final) and not final:
            return 0  # watch mode: the tp is not known yet, so nothing counts as complete
        ready, incomplete = self._jobs()
        heads = expected.heads_of(self.layout.model_config)
        tp = self.layout.tp_size
        if ready:
            with _pool(self.workers) as pool:
                results = list(pool.map(lambda j: self._safe_stitch(j, tp, heads), ready))
            self._write_stitched(results)
        if final:
            for job in incomplete:
                missing = sorted(set(range(tp)) - set(job.files))
                res = StitchResult("missing_rank", "failed", sorted(job.files),
                                   detail=f"rank(s) {missing} of tp={tp} have no file for this tensor")  # fmt: skip
                self._write_stitched(
                    [(job, choose(job.module, job.module_class, job.io, job.idx), res, None)]
                )
                self._error(next(iter(job.files.values())), "missing_rank",
                            f"{job.module} step {job.step} {job.io}[{job.idx}]: {res.detail}")  # fmt: skip
        if final:
            self._mapped.clear()
        self.verify_partial_sums(final)
        if final:
            try:
                self.flag_shared_modules()
            except (InputError, OSError, RuntimeError, ValueError) as exc:  # flags are advisory
                self._error(self.layout.root, "shared_modules",
                            f"shared-module check skipped: {exc}", once=True)  # fmt: skip
        self._notify()
        return len(ready)

    def _settle_tp(self, final: bool) -> bool:
        """Re-derive the expected tp (shard widths catalogued meanwhile, rank folders that
        appeared); a change drops what was stitched at the old tp. True once the tp is known
        (or cannot be learned from widths: no usable config)."""
        exp = self.layout.extra.get("expected")
        if exp is not None and not exp.known:
            heads = expected.heads_of(self.layout.model_config)
            found = expected.tp_from_widths(heads, expected.catalogued_shapes(self.ws, self.run_id))
            if found is not None:
                exp = expected.Expected(max(found[0], exp.tp), f"shard width: {found[1]}", True)
                self.layout.extra["expected"] = exp
                self.layout.fit_device_ranks()
        if self._stitched_tp != self.layout.tp_size:  # a late rank folder, or widths seen
            self._stitched_tp = self.layout.tp_size
            self._flush_now()
            revisions.reset_stitched(self.ws, self.run_id)
            with self.ws.transaction() as cur:
                self._write_ranks(cur)
        self._note_expected(missing=final)
        return exp is None or exp.known or expected.heads_of(self.layout.model_config) is None

    def flag_shared_modules(self) -> int:
        """Record the run's shared modules (aliases, one object for every layer, in place)."""
        return run_checks.flag_shared_modules(self.ws, self.run_id, self.layout)

    def _safe_stitch(self, job: StitchJob, tp: int, heads: Heads | None):
        try:
            return run_stitch(job, tp, heads, self.ws.tensors, self.run_id, self._mapped)
        except InputError as exc:
            res = StitchResult("unreadable", "failed", sorted(job.files), detail=str(exc))
            return job, choose(job.module, job.module_class, job.io, job.idx), res, None

    def _write_stitched(self, results: list) -> None:
        rows, reports = [], []
        for job, choice, res, loc in results:
            tid = None
            if loc is not None and res.tensor is not None:
                tid = self._next_id
                parts = [(None, res.tensor), *res.parts.items()]
                for part, t in parts:
                    rows.append({
                        "tensor_id": self._next_id, "run_id": self.run_id, "step": job.step,
                        "module": job.module, "module_class": choice.module_class or job.module_class,
                        "layer": layer_of(job.module), "io": job.io, "idx": job.idx, "rank": None,
                        "part": part, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                        "nbytes": t.numel() * t.element_size(), "store_group": loc.group,
                        "store_name": (part or "tensor") if loc.group else None,
                        "source_file": loc.source_file, "arg_name": job.arg_name,
                        "call_index": job.call_index,
                    })  # fmt: skip
                    self._next_id += 1
            reports.append({
                "stitch_key": job.key, "run_id": self.run_id, "step": job.step, "module": job.module,
                "module_class": choice.module_class or job.module_class, "io": job.io, "idx": job.idx,
                "arg_name": job.arg_name, "call_index": job.call_index, "rule": res.rule,
                "verdict": res.verdict, "ranks": res.ranks, "max_abs_diff": res.max_abs_diff,
                "detail": res.detail, "rule_source": choice.source, "tensor_id": tid,
            })  # fmt: skip
            if res.verdict == "failed" and res.rule not in ("missing_rank",):
                kind = (
                    "shape_mismatch"
                    if "shape" in res.detail or "dtype" in res.detail
                    else "stitch_failed"
                )
                self._error(next(iter(job.files.values())), kind,
                            f"{job.module} step {job.step} {job.io}[{job.idx}]: {res.detail}")  # fmt: skip
            if choice.source == "none" and job.module not in self._unknown_noted:
                self._unknown_noted.add(job.module)
                what = (
                    "kept as replicated (identical on all ranks)"
                    if res.verdict == "verified"
                    else "not stitched"
                )
                self._error(next(iter(job.files.values())), "unknown_class",
                            f"{job.module}: class {job.module_class or 'unknown'} has no stitch rule; {what}",
                            once=True)  # fmt: skip

        self._write(tensors=rows, reports=reports)
        self.progress.stitched += sum(1 for r in reports if r["tensor_id"] is not None)
        now = time.time()
        for job, _choice, _res, loc in results:
            if loc is None:
                continue
            try:
                closed = max(source_path(f).stat().st_mtime for f in job.files.values())
            except OSError:
                continue
            self.progress.latencies_s.append(now - closed)  # file closed -> viewable
        del self.progress.latencies_s[:-20000]
