"""The tokenizer folder known for a run, from what the workspace records about it.

Token texts (hover, tables) need the run's tokenizer. The workspace knows the model folder a
run was made from when a launch made it (``launches.model_dir``; ``studio demo`` records its
server there too): through the capture that became the run (``captures.run_id``), or through
the launch whose dump folder holds the run's dump folder. Otherwise the run's config.json may
name it (Hugging Face's ``_name_or_path``). A folder counts only when it really holds
``tokenizer.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from studio_backend.analysis.source import run_config
from studio_backend.dumps.launch_record import launch_for
from studio_backend.errors import StudioError


def _captured_model(ws: Any, run_id: str) -> str | None:
    """The model folder of the launch whose capture was ingested as ``run_id``."""
    try:
        row = (
            ws.cursor()
            .execute(
                "SELECT l.model_dir FROM captures c JOIN launches l USING (launch_id)"
                " WHERE c.run_id = ? ORDER BY c.created_at DESC LIMIT 1",
                [run_id],
            )
            .fetchone()
        )
    except duckdb.Error:
        return None
    return row[0] if row else None


def _dump_root(ws: Any, run_id: str) -> str | None:
    row = ws.cursor().execute("SELECT root FROM dump_runs WHERE run_id = ?", [run_id]).fetchone()
    return row[0] if row else None


def candidates(ws: Any, run_id: str) -> list[str]:
    """Folders the run may have been made from, most direct first (not checked)."""
    found = [_captured_model(ws, run_id)]
    root = _dump_root(ws, run_id)
    if root is None:
        raise StudioError(f"no dump run {run_id!r} in this workspace")
    launch = launch_for(ws, root)
    found.append(launch.model_dir if launch else None)
    name = run_config(ws, run_id).get("_name_or_path")
    found.append(name if isinstance(name, str) else None)
    return [f for f in dict.fromkeys(found) if f]


def tokenizer_dir(ws: Any, run_id: str) -> str | None:
    """The resolved folder holding the run's ``tokenizer.json``, or None when none is known."""
    for folder in candidates(ws, run_id):
        try:
            path = Path(folder).expanduser().resolve()
        except (OSError, RuntimeError):
            continue
        if (path / "tokenizer.json").is_file():
            return str(path)
    return None
