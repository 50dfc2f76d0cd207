"""Ingest a dump into the workspace: catalog rank files, stitch, prove, compute statistics.

The ``Ingestor`` is the single writer; the heavy work per unit (one file, or one tensor across
ranks) is done by pure functions that may run in worker threads or processes. Every file is
recorded once by its content key, so re-running (after a crash or restart) skips what is done
and picks up the rest: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import torch

from backend.dumps import expected, file_checks, revisions, run_checks
from backend.dumps import stats as stats_mod
from backend.dumps.detect import DumpLayout, detect
from backend.dumps.formats import msit, msprobe
from backend.dumps.formats.common import (
    TensorRef,
    layer_of,
    load_container,
    load_source,
    load_tensor_file,
    resolve_member,
    source_path,
)
from backend.dumps.formats.torch_zip import FileEnds, read_ends
from backend.dumps.launch_record import launch_tp_for
from backend.dumps.stitch.rules import NO_PARENT_CHECK, choose
from backend.dumps.stitch.stitcher import Heads, StitchResult, max_diff, stitch, tolerance
from backend.errors import InputError
from backend.workspace import Workspace

# A torch.save file ends with its zip central directory, which holds the CRC-32 of every
# record: the last 4 KiB change whenever any tensor byte does.
HEAD_TAIL = 1 << 12
MAX_MAPPED = (
    4096  # catalogued tensors kept memory-mapped for their stitch (bounded: vm.max_map_count)
)


def run_id_for(root: Path) -> str:
    """A stable run id per dump root: ingesting the same dump again resumes the same run."""
    return "run-" + hashlib.sha1(str(root).encode()).hexdigest()[:12]  # noqa: S324 - an id


def content_key(path: Path, ends: FileEnds | None = None) -> str:
    """Size plus a hash of the first and last 4 KiB: changes whenever the file is rewritten."""
    ends = ends or read_ends(path)
    h = hashlib.blake2b(digest_size=12)
    h.update(ends.head[:HEAD_TAIL])
    if ends.size > 2 * HEAD_TAIL:
        h.update(ends.tail[-HEAD_TAIL:])
    return f"{ends.size}-{h.hexdigest()}"


@dataclass
class Progress:
    """Live counters for the UI and the CLI progress bar."""

    files_seen: int = 0
    files_done: int = 0
    bytes_done: int = 0
    errors: int = 0
    queue_depth: int = 0
    stitched: int = 0
    stats_done: int = 0
    started: float = field(default_factory=time.monotonic)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        dt = time.monotonic() - self.started
        return self.bytes_done / 1e6 / dt if dt > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "files_seen": self.files_seen, "files_done": self.files_done,
            "bytes_done": self.bytes_done, "errors": self.errors, "queue_depth": self.queue_depth,
            "stitched": self.stitched, "stats_done": self.stats_done,
            "mb_per_s": round(self.mb_per_s, 2),
        }  # fmt: skip


def _stitch_key(run_id: str, step: int, module: str, io: str, idx: int, arg: Any, call: Any) -> str:
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
class CatalogEntry:
    ref: TensorRef
    relpath: str
    key: str
    size: int
    dtype: str | None = None
    shape: list[int] | None = None
    nbytes: int = 0
    error: InputError | None = None
    tensor: Any = None  # the memory-mapped tensor, handed on to its stitch (not persisted)


def catalog_file(ref: TensorRef, relpath: str, key: str, ends: FileEnds) -> CatalogEntry:
    """Load one file's header (memory-mapped) to learn dtype and shape; pure, runs anywhere."""
    entry = CatalogEntry(ref, relpath, key, ends.size)
    try:
        t = load_tensor_file(ref.path, ends=ends)
    except InputError as exc:
        entry.error = exc
        return entry
    if bad := file_checks.tensor_problem(t):
        entry.error = InputError(ref.path, bad)
        return entry
    entry.dtype = str(t.dtype).removeprefix("torch.")
    entry.shape = list(t.shape)
    entry.nbytes = t.numel() * t.element_size()
    entry.tensor = t
    return entry


def catalog_members(
    refs: list[TensorRef], relpath: str, key: str, ends: FileEnds
) -> list[CatalogEntry]:
    """Catalog every tensor of one container file (loaded once, memory-mapped)."""
    entries = [CatalogEntry(r, relpath, key, ends.size) for r in refs]
    try:
        obj = load_container(refs[0].path)
    except InputError as exc:
        for e in entries:
            e.error = exc
        return entries
    for e in entries:
        try:
            t = resolve_member(obj, e.ref.member, e.ref.path)  # type: ignore[arg-type]
        except InputError as exc:
            e.error = exc
            continue
        if bad := file_checks.tensor_problem(t):
            e.error = InputError(e.ref.path, bad)
            continue
        e.dtype = str(t.dtype).removeprefix("torch.")
        e.shape = list(t.shape)
        e.nbytes = t.numel() * t.element_size()
        e.tensor = t
    return entries


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


def write_stats(ws: Workspace, ids: list[int], results: list[stats_mod.TensorStats]) -> None:
    """Record statistics and top outliers of the given tensors (replacing older ones)."""
    rows, outliers = [], []
    for tid, st in zip(ids, results, strict=True):
        rows.append({"tensor_id": tid, **st.as_row()})
        outliers += [
            {"tensor_id": tid, "k": k, "token": tok, "channel": ch, "value": v}
            for k, (tok, ch, v) in enumerate(st.top)
        ]
    with ws.transaction() as cur:
        cur.register("_new_stats", pd.DataFrame(rows))
        cur.execute("INSERT OR REPLACE INTO dump_stats BY NAME SELECT * FROM _new_stats")
        cur.unregister("_new_stats")
        cur.execute(
            "DELETE FROM dump_outliers WHERE list_contains(?, tensor_id)", [[int(i) for i in ids]]
        )
        if outliers:
            cur.register("_new_outliers", pd.DataFrame(outliers))
            cur.execute("INSERT OR REPLACE INTO dump_outliers BY NAME SELECT * FROM _new_outliers")
            cur.unregister("_new_outliers")


class Ingestor:
    """Ingests one dump into one run. Call ``ingest_paths`` repeatedly, then ``finish``."""

    def __init__(
        self,
        ws: Workspace,
        layout: DumpLayout,
        name: str | None = None,
        *,
        workers: int = 2,
        stats_pool: Executor | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        # The imported libraries (torch, pandas, duckdb) leave ~200k long-lived objects that
        # every full cyclic-GC pass scans (~100 ms each, several per GB ingested): freeze them.
        gc.freeze()
        self.ws = ws
        self.layout = layout
        self.run_id = run_id_for(layout.root)
        self.progress = Progress()
        self.workers = max(1, workers)
        self.stats_pool = stats_pool
        self.on_progress = on_progress
        self._lock = threading.RLock()
        self._unknown_noted: set[str] = set()
        self._stats_failed: set[int] = set()  # tensor ids whose statistics failed this session
        self._mapped: dict[str, Any] = {}  # source file -> memory-mapped tensor awaiting stitch
        # ingest_all: rank files per tensor seen so far, and the tensors whose ranks are complete
        self._groups: dict[str, StitchJob] | None = None
        self._complete: list[StitchJob] = []
        self._batched: dict[str, list] | None = None  # ingest_all: rows queued per table
        self._last_flush = time.monotonic()
        old_tp = revisions.stored_tp(ws, self.run_id)
        if old_tp is not None and old_tp != layout.tp_size:  # stitched at another tp: redo
            revisions.reset_stitched(ws, self.run_id)
        self._stitched_tp = layout.tp_size  # the tp every stitch of this run was made at
        self._ensure_run(name)
        cur = ws.cursor()
        self._done = self._load_done()
        self._next_id = int(
            cur.execute("SELECT coalesce(max(tensor_id), 0) + 1 FROM dump_tensors").fetchone()[0]
        )

    def _load_done(self) -> dict[str, str]:
        """relpath -> content key of every file this run has recorded."""
        return dict(
            self.ws.cursor()
            .execute(
                "SELECT relpath, content_key FROM dump_ingest_files WHERE run_id = ?", [self.run_id]
            )
            .fetchall()
        )

    # -- run and ranks -------------------------------------------------------------------
    def _default_name(self) -> str:
        root = self.layout.root
        return root.parent.name if root.name == "torch_tensors" else root.name

    def _ensure_run(self, name: str | None) -> None:
        cfg = json.dumps(self.layout.model_config) if self.layout.model_config else None
        with self.ws.transaction() as cur:
            exists = cur.execute(
                "SELECT 1 FROM dump_runs WHERE run_id = ?", [self.run_id]
            ).fetchone()
            if exists:
                cur.execute(
                    "UPDATE dump_runs SET status = 'ingesting', tp_size = ?, "
                    "model_config = coalesce(?, model_config), name = coalesce(?, name) WHERE run_id = ?",
                    [self.layout.tp_size, cfg, name, self.run_id],
                )
            else:
                cur.execute(
                    "INSERT INTO dump_runs (run_id, name, root, format, tp_size, model_config, status) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'ingesting')",
                    [self.run_id, name or self._default_name(), str(self.layout.root), self.layout.format,
                     self.layout.tp_size, cfg],
                )  # fmt: skip
            self._write_ranks(cur)
            # run-level rows of the side files are re-judged now (a fixed ranks.json clears)
            cur.execute("DELETE FROM dump_ingest_errors WHERE run_id = ? AND kind IN "
                        "('bad_ranks_json', 'bad_config', 'rank_order')", [self.run_id])  # fmt: skip
        if self.layout.rank_order_note:
            self._error(self.layout.root, "rank_order", self.layout.rank_order_note, once=True)
        for path, kind, message in self.layout.extra.get("side_problems", []):
            self._error(path, kind, message, once=True)
        self._note_expected(missing=False)

    def _note_expected(self, missing: bool) -> None:
        """Error rows for a missing rank (against the expected tp) and an unusable config."""
        for problem in expected.config_problems(self.layout.model_config):
            self._error(self.layout.root, "bad_config", f"{problem}; QKV cannot be split by "
                        "heads and the shard widths are not checked", once=True)  # fmt: skip
        if not missing:
            return
        missing = self.layout.missing_ranks
        if not missing:  # a rank that was missing has arrived: its run-level row goes
            with self.ws.transaction() as cur:
                cur.execute("DELETE FROM dump_ingest_errors WHERE run_id = ? AND path = ? AND "
                            "kind = 'missing_rank'", [self.run_id, str(self.layout.root)])  # fmt: skip
        else:
            exp = self.layout.extra.get("expected")
            tp, why = self.layout.tp_size, exp.source if exp else "expected"
            if self.layout.extra.get("rank_source") in ("pids", "device ids (offset)"):
                # the order is the PIDs' (or device ids that are not ranks), so which rank is
                # absent is unknown (rank 0's folder missing would be reported as rank 1)
                what = (f"{len(missing)} of the {tp} ranks of tp={tp} have no folder ({why}); "
                        "which one(s) cannot be told: the rank order comes from process ids "
                        "(add ranks.json)")  # fmt: skip
            else:
                what = f"rank(s) {missing} of tp={tp} have no folder ({why})"
            self._error(self.layout.root, "missing_rank",
                        f"{what}; their shards cannot be stitched", once=True)  # fmt: skip

    def _write_ranks(self, cur) -> None:
        old = dict(cur.execute("SELECT folder, rank FROM dump_ranks WHERE run_id = ?",
                               [self.run_id]).fetchall())  # fmt: skip
        for folder, rank in self.layout.ranks.items():
            if folder in old and old[folder] != rank:  # the order changed: a folder arrived late
                prefix = str(self.layout.folders[folder].path) + "/"
                cur.execute("UPDATE dump_tensors SET rank = ? WHERE run_id = ? AND rank IS NOT "
                            "NULL AND starts_with(source_file, ?)", [rank, self.run_id, prefix])  # fmt: skip
        cur.execute("DELETE FROM dump_ranks WHERE run_id = ?", [self.run_id])
        for folder, rank in sorted(self.layout.ranks.items(), key=lambda kv: kv[1]):
            rf = self.layout.folders[folder]
            cur.execute(
                "INSERT INTO dump_ranks VALUES (?, ?, ?, ?, ?)",
                [self.run_id, rank, folder, rf.device, rf.pid],
            )
        cur.execute(
            "UPDATE dump_runs SET tp_size = ? WHERE run_id = ?", [self.layout.tp_size, self.run_id]
        )

    def _error(self, path: Path | str, kind: str, message: str, once: bool = False) -> None:
        with self.ws.transaction() as cur:
            if (
                once
                and cur.execute(
                    "SELECT 1 FROM dump_ingest_errors WHERE run_id = ? AND path = ? AND kind = ? AND message = ?",
                    [self.run_id, str(path), kind, message],
                ).fetchone()
            ):
                return
            cur.execute(
                "INSERT INTO dump_ingest_errors (run_id, path, kind, message) VALUES (?, ?, ?, ?)",
                [self.run_id, str(path), kind, message],
            )
        self.progress.errors += 1

    # -- catalog -------------------------------------------------------------------------
    def pending(self, paths: Iterable[Path]) -> list[tuple[list[TensorRef], str, str, FileEnds]]:
        """The files not yet ingested under their current content (refs, relpath, key, ends).

        A tensor file gives one ref; a container file (SGLang) one per tensor inside it.
        """
        out = []
        for p in paths:
            bad = file_checks.name_problem(p) or file_checks.not_regular(p)
            if bad:  # never opened (a FIFO would block for good), nor recorded by its name
                self._error(file_checks.printable(p), "skipped", bad, once=True)
                continue
            try:
                rel = str(p.relative_to(self.layout.root))
                ends = read_ends(p)  # one read serves the key and the header
            except (OSError, ValueError):
                continue  # vanished meanwhile, or not in this dump
            key = content_key(p, ends=ends)
            if self._done.get(rel) == key:
                continue
            try:
                refs = self.layout.refs(p)
            except InputError as exc:  # an unreadable container: recorded once, not retried
                self._error(p, "unreadable", exc.problem)
                self._write(files=[(self.run_id, rel, key, ends.size, "error")])
                self._done[rel] = key
                continue
            finally:
                for path, message in self.layout.take_notes():
                    self._error(path, "skipped", message)
            if not refs:
                continue
            if refs[0].rank_folder not in self.layout.ranks and self.layout.refresh():
                with self.ws.transaction() as cur:
                    self._write_ranks(cur)
            out.append((refs, rel, key, ends))
        return out

    def is_new(self, path: Path) -> bool:
        try:
            return str(path.relative_to(self.layout.root)) not in self._done
        except ValueError:
            return False

    def ingest_paths(self, paths: Iterable[Path], retry_fresh_s: float = 0.0) -> list[Path]:
        """Catalog the given files, skipping those already ingested under the same content.

        With ``retry_fresh_s`` (streaming), a file that fails to load although it changed less
        than that many seconds ago is not recorded as an error but returned for a later retry.
        """
        todo = self.pending(paths)
        self.progress.files_seen += len(todo)
        if not todo:
            return []
        # in this thread: reading a header is ~50 us of mostly GIL-held work, so threads would
        # only contend (ingest_all overlaps the catalog with the stitch threads instead)
        entries = [
            e
            for refs, rel, key, ends in todo
            for e in (
                [catalog_file(refs[0], rel, key, ends)]
                if len(refs) == 1 and refs[0].member is None
                else catalog_members(refs, rel, key, ends)
            )
        ]
        retry: list[Path] = []
        if retry_fresh_s:
            now = time.time()
            keep = []
            for e in entries:
                try:
                    fresh = e.error is not None and now - e.ref.path.stat().st_mtime < retry_fresh_s
                except OSError:
                    fresh = False
                (retry.append(e.ref.path) if fresh else keep.append(e))
            self.progress.files_seen -= len(retry)
            entries = keep
        self._write_catalog(entries)
        self._notify()
        return retry

    def _write_catalog(self, entries: list[CatalogEntry]) -> None:
        rows, files = [], []
        changed = [e.ref for e in entries if e.relpath in self._done]
        if changed:  # rewritten since ingested: the old rows and stitches go, never duplicated
            self._flush_now()
            keys = [_stitch_key(self.run_id, r.step, r.module, r.io, r.idx, r.arg_name,
                                r.call_index) for r in changed]  # fmt: skip
            revisions.forget_sources(self.ws, self.run_id, sorted({str(r.path) for r in changed}),
                                     keys)  # fmt: skip
        self._clear_stale([e for e in entries if e.error is None])
        for e in entries:
            ref = e.ref
            rank = self.layout.ranks.get(ref.rank_folder)
            if e.error is not None:
                kind = (
                    "unsupported_dtype" if "complex dtype" in e.error.problem
                    else "not_tensor" if "not a" in e.error.problem or "holds a" in e.error.problem
                    else "unreadable"
                )  # fmt: skip
                self._error(ref.path, kind, e.error.problem)
                files.append((e.relpath, e.key, e.size, "error"))
                continue
            if rank is None:
                self._error(
                    ref.path, "unknown_rank", f"rank folder {ref.rank_folder!r} has no rank"
                )
                files.append((e.relpath, e.key, e.size, "error"))
                continue
            if e.tensor is not None and len(self._mapped) < MAX_MAPPED:
                self._mapped[ref.source] = e.tensor
            e.tensor = None
            rows.append({
                "tensor_id": self._next_id, "run_id": self.run_id, "step": ref.step,
                "module": ref.module, "module_class": ref.module_class, "layer": layer_of(ref.module),
                "io": ref.io, "idx": ref.idx, "rank": rank, "part": None, "dtype": e.dtype,
                "shape": e.shape, "nbytes": e.nbytes, "store_group": None, "store_name": None,
                "source_file": ref.source, "arg_name": ref.arg_name, "call_index": ref.call_index,
            })  # fmt: skip
            self._next_id += 1
            files.append((e.relpath, e.key, e.size, "ingested"))
            self.progress.bytes_done += e.nbytes if ref.member is not None else e.size
            if self._groups is not None:
                self._track(ref, rank)
        kinds = {e.ref.module: e.ref.kind for e in entries}
        mods = {r["module"]: (self.run_id, r["module"], r["module_class"], r["layer"],
                              kinds.get(r["module"], "module")) for r in rows}  # fmt: skip
        self._write(
            tensors=rows, files=[(self.run_id, *f) for f in files], modules=list(mods.values())
        )
        for rel, key, _size, _status in files:
            self._done[rel] = key
        self.progress.files_done += len({f[0] for f in files})

    def _flush_now(self) -> None:
        if self._batched:
            self._flush()

    def _clear_stale(self, good: list[CatalogEntry]) -> None:
        """A file that loads now clears the errors it had while it was being written."""
        paths = sorted({str(e.ref.path) for e in good})
        if not paths:
            return
        with self.ws.transaction() as cur:
            cur.execute(
                "DELETE FROM dump_ingest_errors WHERE run_id = ? AND list_contains(?, path) "
                "AND kind IN ('unreadable', 'not_tensor', 'unsupported_dtype')",
                [self.run_id, paths],
            )

    def _write(self, **rows: list) -> None:
        """Record rows (tensors, files, modules, reports) now, or queue them while batched."""
        if self._batched is not None:
            for k, v in rows.items():
                self._batched.setdefault(k, []).extend(v)
            return
        self._commit(rows)

    def _flush(self) -> None:
        """Commit the queued rows: one statement per table, one transaction (a WAL sync)."""
        rows, self._batched = self._batched or {}, {}
        self._commit(rows)
        self._last_flush = time.monotonic()

    def _commit(self, rows: dict[str, list]) -> None:
        if not any(rows.values()):
            return
        with self.ws.transaction() as cur:
            self._commit_rows(cur, rows)

    def _commit_rows(self, cur, rows: dict[str, list]) -> None:  # noqa: ANN001 - DuckDB cursor
        """Insert queued rows in the caller's transaction (a subclass adds its own tables)."""
        tensors, files = rows.get("tensors"), rows.get("files")
        modules, reports = rows.get("modules"), rows.get("reports")
        if tensors:
            self._insert_tensors(cur, tensors)
        if files:
            fdf = pd.DataFrame(
                files, columns=["run_id", "relpath", "content_key", "size", "status"]
            ).drop_duplicates("relpath", keep="last")
            cur.register("_new_files", fdf)
            cur.execute(
                "INSERT OR REPLACE INTO dump_ingest_files (run_id, relpath, content_key, size, status) "
                "SELECT run_id, relpath, content_key, size, status FROM _new_files"
            )
            cur.unregister("_new_files")
        if modules:
            mdf = pd.DataFrame(
                modules, columns=["run_id", "module", "module_class", "layer", "kind"]
            ).drop_duplicates("module")
            cur.register("_new_mods", mdf)
            cur.execute(
                "INSERT INTO dump_modules SELECT * FROM _new_mods ON CONFLICT DO UPDATE SET "
                "module_class = coalesce(excluded.module_class, dump_modules.module_class)"
            )
            cur.unregister("_new_mods")
        if reports:
            cur.register("_new_reports", pa.Table.from_pylist(reports))
            try:
                cur.execute(
                    "INSERT OR REPLACE INTO dump_stitch_report BY NAME SELECT * FROM _new_reports"
                )
            finally:
                cur.unregister("_new_reports")

    def _track(self, ref: TensorRef, rank: int) -> None:
        assert self._groups is not None
        key = _stitch_key(self.run_id, ref.step, ref.module, ref.io, ref.idx, ref.arg_name,
                          ref.call_index)  # fmt: skip
        job = self._groups.get(key)
        if job is None:
            job = StitchJob(key, ref.step, ref.module, ref.module_class, ref.io, ref.idx,
                            ref.arg_name, int(ref.call_index or 0), {})  # fmt: skip
            self._groups[key] = job
        job.files[rank] = ref.source
        if len(job.files) == self.layout.tp_size and sorted(job.files) == list(
            range(len(job.files))
        ):
            self._complete.append(self._groups.pop(key))

    def ingest_all(
        self, paths: Iterable[Path], batch_files: int = 48, flush_s: float = 1.0
    ) -> None:
        """Catalog and stitch many files, overlapping the two; then stitch what is left.

        Files go in tensor order (step, module, io, rank), so each batch completes tensors.
        The catalog (reading headers: needs the GIL) runs here while worker threads stitch and
        write the tensors completed by earlier batches (memcmp, copies and file writes release
        the GIL), and this thread records their results in the workspace, committed together
        about every ``flush_s`` seconds. After a crash, what was not committed is redone.
        """
        keyed = [(p, self.layout.order_key(p)) for p in paths]
        order = sorted((x for x in keyed if x[1] is not None), key=lambda x: x[1])
        done = {
            k for (k,) in self.ws.cursor().execute(
                "SELECT stitch_key FROM dump_stitch_report WHERE run_id = ?", [self.run_id]
            ).fetchall()
        }  # fmt: skip
        heads, tp = expected.heads_of(self.layout.model_config), self.layout.tp_size
        self._groups, self._complete, self._batched = {}, [], {}
        running: list[Future] = []
        try:
            with _pool(self.workers) as pool, _short_gil_switch():
                for i in range(0, len(order), batch_files):
                    self.ingest_paths([p for p, _ in order[i : i + batch_files]])
                    jobs, self._complete = self._complete, []
                    running += [pool.submit(self._safe_stitch, j, tp, heads)
                                for j in jobs if j.key not in done]  # fmt: skip
                    state = [(f, f.done()) for f in running]  # one look: none slips through
                    finished = [f for f, ready in state if ready]
                    running = [f for f, ready in state if not ready]
                    if finished:
                        self._write_stitched([f.result() for f in finished])
                    if time.monotonic() - self._last_flush > flush_s:
                        self._flush()  # what is stitched so far becomes visible
                if running:
                    self._flush()  # the catalog goes in while the last stitches still run
                    self._write_stitched([f.result() for f in running])
        finally:
            try:
                self._flush()
            except Exception:
                self._batched = None  # the workspace stays the truth about what is done:
                self._done = self._load_done()  # unqueued files are ingested again next time
                raise
            finally:
                self._groups, self._batched = None, None
        self.stitch_ready(final=True)

    def _insert_tensors(self, cur, rows: list[dict[str, Any]]) -> None:
        cur.register("_new_tensors", pa.Table.from_pylist(rows))  # ~2x faster than pandas
        try:
            cur.execute("INSERT INTO dump_tensors BY NAME SELECT * FROM _new_tensors")
        finally:
            cur.unregister("_new_tensors")

    def ingest_tool_stats(self) -> int:
        """Statistics written by the tool itself (msit statistics.csv, msprobe dump.json)."""
        root = self.layout.root
        n = 0
        if self.layout.format == "msit":
            files = [
                f for rf in self.layout.folders.values() for f in rf.path.glob("*/*/statistics.csv")
            ]
        elif self.layout.format == "msprobe":
            files = list(root.glob("step*/*/dump.json"))
        else:
            files = []  # SGLang writes no statistics of its own
        for f in sorted(files):
            bad = file_checks.name_problem(f) or file_checks.not_regular(f)
            if bad:
                self._error(file_checks.printable(f), "skipped", bad, once=True)
                continue
            rel = str(f.relative_to(root))
            try:
                key = content_key(f)
                if self._done.get(rel) == key:
                    continue
                rows = (
                    msit.read_statistics_csv(f)
                    if self.layout.format == "msit"
                    else msprobe.read_dump_json_stats(f)
                )
            except (InputError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                err = file_checks.side_file_error(f, exc)
                self._error(file_checks.printable(f), "unreadable", err.problem, once=True)
                continue
            rows = [file_checks.clean_tool_row(r) for r in rows]
            if self.layout.format == "msit":  # <rank>/<step>/<module>/statistics.csv
                folder, step_s = f.parents[2].name, f.parents[1].name
            else:  # step<N>/<rank>/dump.json
                folder, step_s = f.parent.name, f.parents[1].name.removeprefix("step")
            with self.ws.transaction() as cur:
                for r in rows:
                    cur.execute(
                        "INSERT INTO dump_tool_stats (run_id, rank, step, module, module_class, io, idx, "
                        "dtype, shape, max, min, mean, l2, source_file, arg_name) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [self.run_id, self.layout.ranks.get(folder), int(step_s) if step_s.isdigit() else None,
                         r["module"], r["module_class"], r["io"], r["idx"], r["dtype"], r["shape"],
                         r["max"], r["min"], r["mean"], r["l2"], str(f), r.get("arg_name")],
                    )  # fmt: skip
                cur.execute(
                    "INSERT OR REPLACE INTO dump_ingest_files (run_id, relpath, content_key, size, status) "
                    "VALUES (?, ?, ?, ?, 'ingested')",
                    [self.run_id, rel, key, f.stat().st_size],
                )
            self._done[rel] = key
            n += len(rows)
        return n

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
                _stitch_key(self.run_id, step, module, io, idx, arg, call), step, module, cls, io,
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

    def verify_partial_sums(self, final: bool = False) -> int:
        """Check each summed partial (FusedMoE) against its parent block's stitched output."""
        cur = self.ws.cursor()
        pending = cur.execute(
            """
            SELECT r.stitch_key, r.step, r.module, r.tensor_id, p.tensor_id, r.ranks,
                   r.module_class
            FROM dump_stitch_report r
            LEFT JOIN dump_stitch_report p ON p.run_id = r.run_id AND p.step = r.step
                 AND p.module = regexp_replace(r.module, '\\.[^.]+$', '') AND p.io = 'output'
                 AND p.idx = 0 AND p.tensor_id IS NOT NULL
                 AND NOT list_contains(?, coalesce(r.module_class, ''))
            WHERE r.run_id = ? AND r.rule = 'partial_sum' AND r.verdict = 'assumed'
            """,
            [sorted(NO_PARENT_CHECK), self.run_id],
        ).fetchall()
        from backend.dumps.query import load_tensor

        updates: list[tuple[str | None, float | None, str, str]] = []
        for key, _step, _module, tid, parent_tid, ranks, cls in pending:
            if parent_tid is None:
                if final:
                    why = ("the parent's output is not this sum" if cls in NO_PARENT_CHECK
                           else "the parent block's output was not dumped")  # fmt: skip
                    updates.append((None, None, f"partial sums added over ranks; {why}, so the "
                                    "sum is unverified", key))  # fmt: skip
                continue
            mine, parent = load_tensor(self.ws, tid), load_tensor(self.ws, parent_tid)
            if mine.shape != parent.shape:
                verdict, diff = "failed", None
                detail = f"summed shape {list(mine.shape)} != parent output {list(parent.shape)}"
            else:
                diff = max_diff(mine, parent)
                lo, hi = torch.aminmax(parent) if parent.numel() else (0.0, 0.0)
                scale = max(abs(float(lo)), abs(float(hi)))
                ok = diff <= tolerance(parent.dtype, scale, len(ranks))
                verdict = "verified" if ok else "failed"
                detail = (f"sum of {len(ranks)} partial outputs equals the parent block's output"
                          if ok else "sum of partial outputs differs from the parent block's output")  # fmt: skip
            updates.append((verdict, diff, detail, key))
        if updates:  # one transaction: each commit is a WAL sync
            with self.ws.transaction() as w:
                w.executemany(
                    "UPDATE dump_stitch_report SET verdict = coalesce(?, verdict), "
                    "max_abs_diff = coalesce(?, max_abs_diff), detail = ? WHERE stitch_key = ?",
                    updates,
                )
        failed = [key for verdict, _d, _t, key in updates if verdict == "failed"]
        if failed:
            self._drop_stitched(failed)
        for verdict, _diff, detail, key in updates:
            if verdict == "failed":
                self._error(key, "stitch_failed", detail)
        return sum(1 for u in updates if u[0] is not None)

    def _drop_stitched(self, keys: list[str]) -> None:
        run_checks.drop_stitched(self.ws, self.run_id, keys)

    # -- statistics ----------------------------------------------------------------------
    def compute_stats(self, limit: int | None = None) -> int:
        """Statistics for stitched tensors that have none yet (at most ``limit``; a pool if given)."""
        from backend.dumps import axis_store

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
            with _pool(self.workers) as pool:
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

    def finish(self, status: str = "done") -> None:
        with self.ws.transaction() as cur:
            cur.execute("UPDATE dump_runs SET status = ? WHERE run_id = ?", [status, self.run_id])

    def _notify(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress)


def ingest_dump(
    ws: Workspace,
    dump_root: str | Path,
    name: str | None = None,
    *,
    model_config: dict[str, Any] | None = None,
    with_stats: bool = True,
    workers: int = 2,
    stats_workers: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    launch_tp: tuple[int, str] | None = None,
) -> str:
    """Ingest a whole dump (blocking): catalog, stitch, verify, statistics. Returns the run id.

    ``launch_tp``: (tp, launch name) of the launch that wrote the dump: the tp it must have.

    ``stats_workers > 0`` computes statistics in that many processes (each reads its tensor
    memory-mapped from the store and returns only the numbers to this, the single writer).
    """
    if launch_tp is None:
        launch_tp = launch_tp_for(ws, dump_root)
    layout = detect(dump_root, model_config, launch_tp)
    from backend.dumps.no_steps import require_steps

    require_steps(layout)  # a compiled engine's dump: say why, do not "ingest" nothing
    pool = None
    if stats_workers > 0:
        from backend.procs import SafeProcessPool

        pool = SafeProcessPool(stats_workers, "forkserver")
    try:
        return _ingest_all(ws, layout, name, workers, pool, on_progress, with_stats)
    finally:
        if pool is not None:
            pool.shutdown()


def _ingest_all(ws, layout, name, workers, pool, on_progress, with_stats) -> str:  # noqa: ANN001
    ing = Ingestor(ws, layout, name, workers=workers, stats_pool=pool, on_progress=on_progress)
    files = layout.tensor_files()
    ing.progress.files_seen = 0
    ing.ingest_tool_stats()
    ing.ingest_all(files)
    if with_stats:
        ing.compute_stats()
    ing.finish("done")
    p = ing.progress
    ws.log("ingest", f"dump {ing.run_id} ({layout.format}, tp={layout.tp_size}): {p.files_done} files, "
                     f"{p.stitched} tensors stitched, {p.errors} errors")  # fmt: skip
    return ing.run_id
