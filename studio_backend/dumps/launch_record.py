"""The launch that wrote a dump: its tensor-parallel size is evidence for the run's expected tp
(studio_backend/dumps/expected.py), so a rank that never wrote its folder is missed, not assumed away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb


def launch_tp_for(ws: Any, dump_root: str | Path) -> tuple[int, str] | None:
    """(tp, "launch <id>") of the newest launch whose dump folder is or holds ``dump_root``;
    None when no launch of this workspace wrote it."""
    try:
        root = Path(dump_root).resolve()
        rows = (
            ws.cursor()
            .execute(
                "SELECT launch_id, tp, dump_path FROM launches WHERE dump_path IS NOT NULL "
                "ORDER BY created_at DESC"
            )
            .fetchall()
        )
    except (duckdb.Error, OSError, RuntimeError):
        return None  # a workspace without launches (or unreadable): no evidence
    for launch_id, tp, dump_path in rows:
        base = Path(dump_path).resolve()
        if (root == base or base in root.parents) and tp:
            return int(tp), f"launch {launch_id}"
    return None
