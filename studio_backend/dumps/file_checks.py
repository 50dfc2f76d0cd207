"""Per-file checks made before a dump file is opened or recorded (issue 17 item 2).

A file that fails one of them becomes one error row; the rest of the run goes on. Kept out of
ingest.py: these are pure functions of a path or a tensor header.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import torch

from studio_backend.errors import InputError

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a dangling symbolic link",
}


def printable(path: Path | str) -> str:
    """The path as text that DuckDB and a terminal accept: undecodable bytes as ``\\xNN``."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def name_problem(path: Path) -> str | None:
    """Why a file's name cannot be recorded (bytes that are not UTF-8), or None."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return (
            "the file or folder name is not UTF-8 text; skipped (rename it to UTF-8 to ingest it)"
        )
    return None


def not_regular(path: Path) -> str | None:
    """Why ``path`` must not be opened: a FIFO, device, socket... (never opened: a FIFO would
    block the reader for good), or None for a regular file (or one that vanished)."""
    try:
        mode = path.stat().st_mode  # follows links: a link to a regular file is fine
    except FileNotFoundError:
        try:
            mode = path.lstat().st_mode
        except OSError:
            return None
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    what = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    return f"{what}, not a regular file; never opened (a dump writes regular files)"


def tensor_problem(t: torch.Tensor) -> str | None:
    """Why a loaded tensor is refused: complex values (stitching and statistics are real-valued:
    keeping only the real part would lose the imaginary part without a word)."""
    if t.is_complex():
        return (
            f"complex dtype {str(t.dtype).removeprefix('torch.')} is not supported; refused "
            "(storing it would drop the imaginary part)"
        )
    return None


def number(v: Any) -> float | None:
    """A statistic from a side file as a float; None for anything that is not a number."""
    if isinstance(v, bool):
        return None
    try:
        if isinstance(v, str):
            return float(v) if v.strip() else None
        return float(v) if isinstance(v, int | float) else None
    except (ValueError, OverflowError):
        return None


def clean_tool_row(r: dict[str, Any]) -> dict[str, Any]:
    """A tool-statistics row with every field of the type the table holds."""
    return {
        "module": str(r.get("module")), "module_class": _text(r.get("module_class")),
        "io": str(r.get("io")), "idx": int(r["idx"]) if isinstance(r.get("idx"), int) else 0,
        "dtype": _text(r.get("dtype")), "shape": _text(r.get("shape")),
        "max": number(r.get("max")), "min": number(r.get("min")),
        "mean": number(r.get("mean")), "l2": number(r.get("l2")),
        "arg_name": _text(r.get("arg_name")),
    }  # fmt: skip


def _text(v: Any) -> str | None:
    return None if v is None else printable(str(v))


def side_file_error(path: Path, exc: Exception) -> InputError:
    """A side file (statistics.csv, dump.json) that a reader could not parse, as one line."""
    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, UnicodeDecodeError):
        return InputError(printable(path), f"not UTF-8 text (byte {exc.start}); skipped")
    return InputError(printable(path), f"malformed ({type(exc).__name__}: {exc}); skipped")
