"""The launch that wrote a dump: its tensor-parallel size is evidence for the run's expected tp
(studio_backend/dumps/expected.py), so a rank that never wrote its folder is missed, not assumed away;
its model folder is where the run's tokenizer is (studio_backend/analysis/run_model.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import duckdb


class LaunchRecord(NamedTuple):
    launch_id: str
    tp: int | None
    model_dir: str


def launch_for(ws: Any, dump_root: str | Path) -> LaunchRecord | None:
    """The newest launch whose dump folder is or holds ``dump_root``; None when no launch of
    this workspace wrote it."""
    try:
        root = Path(dump_root).resolve()
        rows = (
            ws.cursor()
            .execute(
                "SELECT launch_id, tp, dump_path, model_dir FROM launches"
                " WHERE dump_path IS NOT NULL ORDER BY created_at DESC"
            )
            .fetchall()
        )
    except (duckdb.Error, OSError, RuntimeError):
        return None  # a workspace without launches (or unreadable): no evidence
    for launch_id, tp, dump_path, model_dir in rows:
        base = Path(dump_path).resolve()
        if root == base or base in root.parents:
            return LaunchRecord(launch_id, tp, model_dir)
    return None


def launch_tp_for(ws: Any, dump_root: str | Path) -> tuple[int, str] | None:
    """(tp, "launch <id>") of the newest launch whose dump folder is or holds ``dump_root``;
    None when no launch of this workspace wrote it."""
    launch = launch_for(ws, dump_root)
    if launch is None or not launch.tp:
        return None
    return int(launch.tp), f"launch {launch.launch_id}"
