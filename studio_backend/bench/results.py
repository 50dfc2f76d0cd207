"""Benchmark results in the workspace, and their JSON export/import (for other machines)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pandas as pd

from studio_backend.errors import InputError
from studio_backend.workspace import Workspace

FORMAT = "studio-bench/1"
RUN_COLUMNS = (
    "run_id", "kind", "name", "device", "device_name", "versions", "config", "created_at",
    "source", "copy_gbps", "datasheet_gbps", "notes",
)  # fmt: skip
KERNEL_COLUMNS = (
    "preset", "hidden", "intermediate", "num_experts", "topk", "group_size", "dtype", "routing",
    "batch", "impl", "impl_label", "timing", "rotations", "reps", "median_us", "p20_us",
    "p80_us", "experts_touched", "min_bytes", "gbps", "pct_copy", "tflops", "speedup",
    "max_rel_err",
)  # fmt: skip
SERVE_COLUMNS = ("batch", "requests", "input_tokens", "output_tokens", "wall_s", "tokens_per_s")


def _utc_naive(stamp: str) -> dt.datetime:
    """An ISO time as naive UTC (the TIMESTAMP column's convention)."""
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError as exc:
        raise InputError(stamp, "created_at is not an ISO 8601 time") from exc
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def save_result(ws: Workspace, result: dict[str, Any], *, imported: bool = False) -> str:
    """Store one run with its rows in one transaction; returns its run_id."""
    run = result["run"]
    run_id = str(run["run_id"])
    with ws.transaction() as cur:
        if cur.execute("SELECT 1 FROM bench_runs WHERE run_id = ?", [run_id]).fetchone():
            raise InputError(run_id, "this benchmark run is already in the workspace")
        values = [
            json.dumps(run.get(c)) if c in ("versions", "config") else run.get(c)
            for c in RUN_COLUMNS
        ]
        values[RUN_COLUMNS.index("source")] = "imported" if imported else run.get("source")
        values[RUN_COLUMNS.index("created_at")] = _utc_naive(str(run["created_at"]))
        cur.execute(
            f"INSERT INTO bench_runs ({', '.join(RUN_COLUMNS)}, imported_at) "  # noqa: S608 - constant names
            f"VALUES ({', '.join('?' * len(RUN_COLUMNS))}, "
            f"{'current_timestamp' if imported else 'NULL'})",
            values,
        )
        for table, cols, key in (
            ("bench_kernel_results", KERNEL_COLUMNS, "kernel_results"),
            ("bench_serve_results", SERVE_COLUMNS, "serve_results"),
        ):
            for row in result.get(key, []):
                cur.execute(
                    f"INSERT INTO {table} (run_id, {', '.join(cols)}) "  # noqa: S608 - constant names
                    f"VALUES (?, {', '.join('?' * len(cols))})",
                    [run_id, *[row.get(c) for c in cols]],
                )
    kinds = run.get("kind")
    ws.log("bench", f"{'imported' if imported else 'measured'} {kinds} run {run_id}: {run['name']}")
    return run_id


def list_runs(ws: Workspace, kind: str | None = None) -> pd.DataFrame:
    sql = (
        "SELECT run_id, kind, name, device, device_name, created_at, source, copy_gbps, "
        "datasheet_gbps FROM bench_runs"
    )
    params: list[Any] = []
    if kind:
        sql += " WHERE kind = ?"
        params.append(kind)
    return ws.cursor().execute(sql + " ORDER BY created_at DESC", params).df()


def kernel_results(ws: Workspace, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Kernel rows joined with their run's device and copy bandwidth."""
    sql = (
        "SELECT r.name AS run_name, r.device, r.device_name, r.source, r.copy_gbps, "
        "r.datasheet_gbps, k.* FROM bench_kernel_results k JOIN bench_runs r USING (run_id)"
    )
    params: list[Any] = []
    if run_ids:
        sql += f" WHERE k.run_id IN ({', '.join('?' * len(run_ids))})"
        params = list(run_ids)
    return ws.cursor().execute(sql + " ORDER BY k.preset, k.batch, k.impl", params).df()


def serve_results(ws: Workspace, run_ids: list[str] | None = None) -> pd.DataFrame:
    sql = (
        "SELECT r.name AS run_name, r.device_name, r.source, s.* "
        "FROM bench_serve_results s JOIN bench_runs r USING (run_id)"
    )
    params: list[Any] = []
    if run_ids:
        sql += f" WHERE s.run_id IN ({', '.join('?' * len(run_ids))})"
        params = list(run_ids)
    return ws.cursor().execute(sql + " ORDER BY r.created_at, s.batch", params).df()


def export_run(ws: Workspace, run_id: str) -> dict[str, Any]:
    """One run as the JSON document ``import_result`` reads."""
    cur = ws.cursor()
    row = cur.execute(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM bench_runs WHERE run_id = ?",  # noqa: S608
        [run_id],
    ).fetchone()
    if row is None:
        raise InputError(run_id, "no benchmark run with this id in the workspace")
    run = dict(zip(RUN_COLUMNS, row, strict=True))
    for c in ("versions", "config"):
        run[c] = json.loads(run[c]) if run[c] else None
    run["created_at"] = run["created_at"].isoformat()
    out: dict[str, Any] = {"format": FORMAT, "run": run}
    for table, cols, key in (
        ("bench_kernel_results", KERNEL_COLUMNS, "kernel_results"),
        ("bench_serve_results", SERVE_COLUMNS, "serve_results"),
    ):
        rows = cur.execute(
            f"SELECT {', '.join(cols)} FROM {table} WHERE run_id = ? ORDER BY batch",  # noqa: S608
            [run_id],
        ).fetchall()
        out[key] = [dict(zip(cols, r, strict=True)) for r in rows]
    return out


def write_json(result: dict[str, Any], path: Path) -> None:
    doc = {"format": FORMAT, **result}
    path.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")


def parse_result(text: str, source: str) -> dict[str, Any]:
    """Validate an exported document; errors name ``source`` and what is wrong."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(source, f"not a studio benchmark export (expected format {FORMAT!r})")
    run = doc.get("run")
    if not isinstance(run, dict):
        raise InputError(source, "missing the 'run' object")
    for key in ("run_id", "kind", "name", "device", "created_at"):
        if not run.get(key):
            raise InputError(source, f"run has no {key!r}")
    if run["kind"] not in ("kernels", "serve"):
        raise InputError(source, f"unknown run kind {run['kind']!r}")
    for key, cols in (("kernel_results", KERNEL_COLUMNS), ("serve_results", SERVE_COLUMNS)):
        rows = doc.get(key, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise InputError(source, f"{key!r} must be a list of objects")
        for i, r in enumerate(rows):
            missing = [
                c
                for c in ("batch", "median_us" if key == "kernel_results" else "tokens_per_s")
                if r.get(c) is None
            ]
            if missing:
                raise InputError(source, f"{key}[{i}] has no {missing[0]!r}")
            unknown = set(r) - set(cols)
            if unknown:
                raise InputError(source, f"{key}[{i}] has unknown fields {sorted(unknown)}")
    if not doc.get("kernel_results") and not doc.get("serve_results"):
        raise InputError(source, "the run has no result rows")
    return doc


def import_result(ws: Workspace, path: Path) -> str:
    """Import an exported run (``source = 'imported'``); a run already present is refused."""
    return import_text(ws, path.read_text(encoding="utf-8"), str(path))


def import_text(ws: Workspace, text: str, source: str) -> str:
    """Import an exported run from its JSON text (``source`` names it in errors)."""
    return save_result(ws, parse_result(text, source), imported=True)
