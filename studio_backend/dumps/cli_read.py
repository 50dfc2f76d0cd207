"""``studio runs`` and the stored side of ``studio stats``: they only read the workspace, so
they also work while the studio owns it (its read service answers, docs/ARCHITECTURE.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from studio_backend.errors import InputError, StudioError
from studio_backend.workspace import open_workspace

RUN_COLUMNS = ("run_id", "name", "format", "tp_size", "status", "steps", "stitched_tensors",
               "rank_tensors", "created_at", "root")  # fmt: skip


def register_runs(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("runs", help="list the ingested dump runs (works while the studio runs)")
    r.add_argument("--json", action="store_true", help="print JSON records")
    r.set_defaults(func=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    from studio_backend.dumps.query import list_runs

    ws = open_workspace(args.workspace, read_only=True)
    try:
        runs = list_runs(ws)
    finally:
        ws.close()
    runs = runs[list(RUN_COLUMNS)]
    if args.json:
        print(json.dumps(runs.to_dict(orient="records"), indent=2, default=str))
    elif runs.empty:
        print("no dump runs in this workspace yet: `studio ingest DUMP_DIR` or `studio demo`")
    else:
        print(runs.to_string(index=False))
    return 0


def stored_run(ws, target: str, model_config: dict | None = None) -> str | None:  # noqa: ANN001
    """The run id ``target`` names (a run id, or a dump folder already ingested), else None."""
    from studio_backend.dumps.query import list_runs

    runs = list_runs(ws)
    if target in set(runs["run_id"]):
        return target
    path = Path(target).expanduser().resolve()
    if not path.is_dir():
        raise InputError(target, "is neither a run id of this workspace nor a dump directory")
    # Only for a folder: detect and ingest import numba, scipy and yaml (0.35 s), which a run
    # id (``studio render RUN``: the parent's imports are its critical path) does not need.
    from studio_backend.dumps.detect import detect
    from studio_backend.dumps.ingest import run_id_for

    run_id = run_id_for(detect(path, model_config).root)
    return run_id if run_id in set(runs["run_id"]) else None


def require_stored(ws, target: str, model_config: dict | None = None) -> str:  # noqa: ANN001
    """The stored run for ``target`` in a workspace the studio owns (nothing may be ingested
    from here): a dump not ingested yet is a clear error, not a busy-workspace one."""
    run_id = stored_run(ws, target, model_config)
    if run_id is None:
        raise StudioError(
            f"{target}: not ingested in {ws.root} yet, and the running studio owns that "
            "workspace: ingest it on the Dumps page (or stop the studio), then run this again"
        )
    return run_id
