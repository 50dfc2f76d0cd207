"""Discover stage helpers: a dump's run id, and a file's content key (what makes re-ingest exact)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from studio_backend.dumps.formats.torch_zip import FileEnds, read_ends

# A torch.save file ends with its zip central directory, which holds the CRC-32 of every
# record: the last 4 KiB change whenever any tensor byte does.
HEAD_TAIL = 1 << 12


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
