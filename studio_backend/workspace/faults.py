"""Workspace faults and interrupts turned into one clear line and a documented exit code.

Exit codes of every ``studio`` command (docs/RELIABILITY.md):
0 done; 1 finished with errors it reported (e.g. ingest error rows); 2 bad input or usage;
3 a workspace fault (corrupt database, read-only or full disk, missing tensor files);
4 an unexpected internal error (the traceback goes to a log file, never to the terminal);
130 interrupted (Ctrl-C): rows committed before the interrupt are kept.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import duckdb

from studio_backend.errors import StudioError

EXIT_INPUT = 2
EXIT_WORKSPACE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class WorkspaceFault(StudioError):
    """The workspace (database, disk, tensor store) cannot be used as it is."""

    exit_code = EXIT_WORKSPACE


def corrupt_database(db: Path, exc: BaseException) -> WorkspaceFault:
    return WorkspaceFault(
        f"{db}: not a usable DuckDB workspace database ({_first_line(exc)}). Nothing was "
        f"changed. Move it aside (mv {db} {db}.bad) and rerun to start an empty workspace "
        "there, or pass --workspace DIR to use another one."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _is_oserror(exc: BaseException, *codes: int) -> bool:
    return isinstance(exc, OSError) and exc.errno in codes


def explain(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for a fault a person can act on; None for a bug."""
    text = str(exc)
    if isinstance(exc, KeyboardInterrupt) or isinstance(exc, duckdb.InterruptException):
        return EXIT_INTERRUPTED, "interrupted; everything committed before it is kept"
    if isinstance(exc, RuntimeError) and "Query interrupted" in text:
        return EXIT_INTERRUPTED, "interrupted; everything committed before it is kept"
    if _is_oserror(exc, errno.ENOSPC) or "No space left on device" in text:
        name = getattr(exc, "filename", None)
        where = f"{name}: the disk is full" if name else "the workspace's disk is full"
        return EXIT_WORKSPACE, (
            f"{where} (no space left on device). Rows committed before are "
            "kept; free some space (or pass --workspace DIR on a larger disk) and rerun: the "
            "command resumes where it stopped."
        )
    if _is_oserror(exc, errno.EROFS, errno.EACCES, errno.EPERM) or (
        isinstance(exc, duckdb.Error) and ("read-only" in text or "Read-only" in text)
    ):
        where = getattr(exc, "filename", None) or "the workspace"
        return EXIT_WORKSPACE, (
            f"{where}: cannot write there ({_first_line(exc)}). Reading commands (info, "
            "listing runs and statistics) still work; for this one pass --workspace DIR on a "
            "writable disk or make the workspace writable."
        )
    if isinstance(exc, FileNotFoundError) and exc.filename and "tensors" in str(exc.filename):
        return EXIT_WORKSPACE, (
            f"{exc.filename}: a stored tensor file is missing (the workspace's tensors/ folder "
            "was changed by hand). Re-ingest the run (studio ingest DUMP) to write it again."
        )
    return None


def report_internal(command: str, exc: BaseException) -> str:
    """Write the traceback of an unexpected error to a log file; the one line to show."""
    log = Path(tempfile.gettempdir()) / f"studio-error-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        with open(log, "w", encoding="utf-8") as f:
            f.write(f"studio {command} (pid {os.getpid()}, argv {sys.argv!r})\n")
            traceback.print_exception(exc, file=f)
        where = f"details in {log}"
    except OSError:
        where = "no log could be written"
    return (
        f"internal error: {type(exc).__name__}: {_first_line(exc)} ({where}; "
        "please report it with that file)"
    )
