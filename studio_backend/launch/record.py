"""Servers the studio ran itself, in-process (``studio demo``), recorded like supervised launches.

Such a server is a ``launches`` row (status ``stopped``: it is gone by the time it is recorded)
and its request a ``captures`` row that names the run it was ingested as, exactly as a launch
from the Launch page and its capture: what is looked up per launch (the model folder and so the
tokenizer of a run, the tp a dump must have) works for these runs too. ``argv`` and ``env`` are
empty: no command was executed, the rank processes were spawned by the studio's own process.
"""

from __future__ import annotations

from pathlib import Path

from studio_backend.launch.capture import finish_capture, open_capture
from studio_backend.launch.logtail import STUDIO_MARK
from studio_backend.launch.spec import LaunchSpec
from studio_backend.launch.supervisor import new_id
from studio_backend.workspace import Workspace


def record_served(ws: Workspace, spec: LaunchSpec, *, dump_root: Path | None, by: str) -> str:
    """Record a finished in-process server as a launch; returns its launch id. ``dump_root``: the
    dump folder it wrote (only that one: a folder beside it belongs to another run)."""
    launch_id = new_id("L")
    launch_dir = ws.root / "launches" / launch_id
    launch_dir.mkdir(parents=True, exist_ok=True)
    log_path = launch_dir / "server.log"
    log_path.write_text(
        f"{STUDIO_MARK}{by} ran this {spec.engine} server in its own process (tp={spec.tp}); "
        "its output went to that command's output\n",
        encoding="utf-8",
    )
    with ws.transaction() as cur:
        cur.execute(
            "INSERT INTO launches (launch_id, engine, model_dir, host, port, tp, spec, argv, env,"
            " dump_tool, dump_path, log_path, status, message, ready_at, ended_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, '[]', '{}', ?, ?, ?, 'stopped', ?,"
            " current_timestamp, current_timestamp)",
            [
                launch_id, spec.engine, spec.model_dir, spec.host, spec.port, spec.tp,
                spec.to_json(), spec.dump.tool, str(dump_root) if dump_root else None,
                str(log_path), f"run by {by}",
            ],
        )  # fmt: skip
    return launch_id


def record_capture(
    ws: Workspace,
    launch_id: str,
    *,
    source: str,
    prompt_tokens: int,
    max_tokens: int,
    completion: str,
    dump_roots: list[str],
) -> str:
    """Record a request already answered by a recorded launch (status ``done``); returns its
    capture id. ``launch.capture.set_ingest`` then names the run it became."""
    capture_id = open_capture(ws, launch_id, source, prompt_tokens, max_tokens)
    finish_capture(ws, capture_id, "done", completion, dump_roots, None)
    return capture_id
