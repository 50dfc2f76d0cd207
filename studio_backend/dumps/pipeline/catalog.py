"""Catalog stage: which files are new under their content, and each tensor's dtype and shape."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_backend.dumps import file_checks, revisions
from studio_backend.dumps.formats.common import (
    TensorRef,
    layer_of,
    load_container,
    load_tensor_file,
    resolve_member,
)
from studio_backend.dumps.formats.torch_zip import FileEnds, read_ends
from studio_backend.dumps.pipeline.discover import content_key
from studio_backend.dumps.pipeline.rows import STALE_KINDS
from studio_backend.dumps.pipeline.stitch_stage import StitchJob, stitch_key
from studio_backend.errors import InputError

MAX_MAPPED = (
    4096  # catalogued tensors kept memory-mapped for their stitch (bounded: vm.max_map_count)
)


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


class CatalogStage:
    """Cataloguing files into rank-tensor rows (mixed into ``Ingestor``)."""

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
            keys = [stitch_key(self.run_id, r.step, r.module, r.io, r.idx, r.arg_name,
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

    def _clear_stale(self, good: list[CatalogEntry]) -> None:
        """A file that loads now clears the errors it had while it was being written."""
        paths = sorted({str(e.ref.path) for e in good})
        if not paths:
            return
        if not self._has_stale_errors():
            return  # the common case: nothing to clear, and each commit is a WAL sync
        with self.ws.transaction() as cur:
            cur.execute(
                "DELETE FROM dump_ingest_errors WHERE run_id = ? AND list_contains(?, path) "
                "AND list_contains(?, kind)",
                [self.run_id, paths, list(STALE_KINDS)],
            )

    def _has_stale_errors(self) -> bool:
        """Whether the run may hold errors a file clears by loading (read once, then kept up
        to date by ``_error``: the ingestor is the run's single writer)."""
        if getattr(self, "_stale_errors", None) is None:
            self._stale_errors = bool(
                self.ws.cursor().execute(
                    "SELECT count(*) FROM dump_ingest_errors WHERE run_id = ? AND "
                    "list_contains(?, kind)", [self.run_id, list(STALE_KINDS)],
                ).fetchone()[0]
            )  # fmt: skip
        return self._stale_errors

    def _track(self, ref: TensorRef, rank: int) -> None:
        assert self._groups is not None
        key = stitch_key(self.run_id, ref.step, ref.module, ref.io, ref.idx, ref.arg_name,
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
