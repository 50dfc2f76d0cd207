"""``studio info``: the workspace and the detected hardware stacks."""

from __future__ import annotations

import argparse
import json

from studio_backend import hardware
from studio_backend.workspace.db import open_workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="workspace path, schema version, table counts, hardware")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)


def workspace_summary(path: str | None) -> dict[str, object]:
    ws = open_workspace(path, read_only=True)  # works while the studio runs
    try:
        return {
            "workspace": str(ws.root),
            "schema_version": ws.schema_version(),
            "tables": ws.table_counts(),
            "hardware": hardware.as_dicts(),
        }
    finally:
        ws.close()


def cmd_info(args: argparse.Namespace) -> int:
    info = workspace_summary(args.workspace)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]workspace[/]      {info['workspace']}")
    console.print(f"[bold]schema version[/] {info['schema_version']}")
    tables = Table("table", "rows", title="workspace tables")
    for name, count in info["tables"].items():  # type: ignore[union-attr]
        tables.add_row(name, str(count))
    console.print(tables)
    stacks = Table("stack", "available", "version", "detail", title="hardware stacks")
    for s in info["hardware"]:  # type: ignore[union-attr]
        stacks.add_row(
            s["name"], "yes" if s["available"] else "no", s["version"] or "-", s["detail"]
        )
    console.print(stacks)
    return 0
