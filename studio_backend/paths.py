"""Resolution and checking of user-supplied paths."""

from __future__ import annotations

import os
from pathlib import Path

from studio_backend.errors import InputError

DEFAULT_WORKSPACE = "workspace"


def workspace_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The workspace directory: explicit argument, else $STUDIO_WORKSPACE, else ./workspace."""
    raw = explicit or os.environ.get("STUDIO_WORKSPACE") or DEFAULT_WORKSPACE
    return Path(raw).expanduser().resolve()


def existing_dir(raw: str | os.PathLike[str], what: str = "directory") -> Path:
    """Resolve ``raw`` and check it is an existing directory."""
    path = Path(raw).expanduser().resolve()
    if not path.exists():
        raise InputError(path, f"{what} does not exist")
    if not path.is_dir():
        raise InputError(path, f"expected a {what}, found a file")
    return path


def existing_file(raw: str | os.PathLike[str], what: str = "file") -> Path:
    """Resolve ``raw`` and check it is an existing regular file."""
    path = Path(raw).expanduser().resolve()
    if not path.is_file():
        raise InputError(path, f"{what} does not exist or is not a regular file")
    return path


def inside(root: Path, candidate: str | os.PathLike[str]) -> Path:
    """Resolve ``candidate`` relative to ``root`` and refuse anything that escapes it."""
    path = (root / candidate).resolve()
    if path != root and root not in path.parents:
        raise InputError(candidate, f"path escapes {root}")
    return path
