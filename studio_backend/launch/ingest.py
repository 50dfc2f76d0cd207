"""Ingest of captured dumps through the dumps package (``studio_backend.dumps.ingest``), when present."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio_backend.launch.capture import set_ingest
from studio_backend.workspace import Workspace


def available() -> bool:
    try:
        return importlib.util.find_spec("studio_backend.dumps.ingest") is not None
    except ModuleNotFoundError:
        return False


def _model_config(model_dir: str | None) -> dict[str, Any] | None:
    """The launch model's config.json: head counts let the stitcher split fused QKV shards."""
    try:
        cfg = json.loads((Path(model_dir or "") / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) and cfg else None


def ingest_capture(
    ws: Workspace, capture_id: str, on_progress: Callable[[Any], None] | None = None
) -> list[str]:
    """Ingest every dump root of a capture (blocking); returns the run ids."""
    from studio_backend.dumps.ingest import ingest_dump

    row = (
        ws.cursor()
        .execute(
            "SELECT c.dump_root, l.model_dir FROM captures c JOIN launches l USING (launch_id)"
            " WHERE c.capture_id = ?",
            [capture_id],
        )
        .fetchone()
    )
    roots: list[str] = json.loads(row[0]) if row and row[0] else []
    model_config = _model_config(row[1] if row else None)
    run_ids = []
    set_ingest(ws, capture_id, "ingesting", None)
    try:
        for i, root in enumerate(roots):
            name = f"{capture_id}" if len(roots) == 1 else f"{capture_id}-{i}"
            run_ids.append(
                str(
                    ingest_dump(
                        ws, root, name=name, model_config=model_config, on_progress=on_progress
                    )
                )
            )
            set_ingest(ws, capture_id, "ingesting", run_ids[0])
    except Exception as exc:
        set_ingest(
            ws,
            capture_id,
            "ingest_failed",
            run_ids[0] if run_ids else None,
            f"{type(exc).__name__}: {exc}",
        )
        raise
    set_ingest(
        ws,
        capture_id,
        "ingested",
        run_ids[0] if run_ids else None,
        None if roots else "no dump folder appeared",
    )
    return run_ids


def progress(ws: Workspace, capture_id: str) -> dict[str, Any]:
    """Rows ingested so far for a capture's dump roots (reads the dumps tables when they exist)."""
    row = (
        ws.cursor()
        .execute(
            "SELECT dump_root, run_id, status FROM captures WHERE capture_id = ?", [capture_id]
        )
        .fetchone()
    )
    if row is None:
        return {}
    roots = json.loads(row[0]) if row[0] else []
    out: dict[str, Any] = {
        "status": row[2],
        "run_id": row[1],
        "roots": roots,
        "tensors": 0,
        "stitched_modules": 0,
    }
    try:
        cur = ws.cursor()
        runs = [
            r[0]
            for r in cur.execute(
                "SELECT run_id FROM dump_runs WHERE root IN (SELECT unnest(?::VARCHAR[])) OR run_id = ?",
                [roots, row[1] or ""],
            ).fetchall()
        ]
        if runs:
            out["run_ids"] = runs
            out["tensors"], out["stitched_modules"] = cur.execute(
                "SELECT count(*), count(DISTINCT CASE WHEN rank IS NULL THEN module END)"
                " FROM dump_tensors WHERE run_id IN (SELECT unnest(?::VARCHAR[]))",
                [runs],
            ).fetchone()
    except Exception:  # noqa: BLE001, S110 - the dumps tables are not there yet
        pass
    return out
