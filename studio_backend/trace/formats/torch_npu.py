"""torch_npu profiler reader: ``*_ascend_pt/ASCEND_PROFILER_OUTPUT``.

Device kernels come from ``kernel_details.csv`` (Name, Type, Accelerator Core, Start Time(us),
Duration(us), Wait Time(us), Input Shapes, ...). When ``trace_view.json`` is there, its host
events (cpu_op, python_function, user_annotation) and its ``torch_to_npu`` flows (``async_npu``,
op start -> kernel start) are read too, so kernels attribute to ops and modules exactly as in a
Kineto trace. Kernels from the CSV and the flows' device ends share one lane ('npu') and are
matched on their start time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError
from studio_backend.trace.formats import kineto

OUTPUT_DIR = "ASCEND_PROFILER_OUTPUT"
KERNEL_CSV = "kernel_details.csv"
TRACE_VIEW = "trace_view.json"
REQUIRED = ("Name", "Start Time(us)", "Duration(us)")
HOST_CATS = {"cpu_op", "python_function", "user_annotation"}
NPU_FLOW = ("async_npu", "torch_to_npu")
NPU_LANE = "npu"


def find_output_dir(path: Path) -> Path | None:
    """The ASCEND_PROFILER_OUTPUT directory at, under, or one ``*_ascend_pt`` below ``path``."""
    if path.name == OUTPUT_DIR and path.is_dir():
        return path
    if (path / OUTPUT_DIR).is_dir():
        return path / OUTPUT_DIR
    found = sorted(path.glob(f"*/{OUTPUT_DIR}"))
    if len(found) > 1:
        raise InputError(
            path,
            f"{len(found)} profiles inside ({', '.join(p.parent.name for p in found)}): "
            "ingest one *_ascend_pt directory at a time",
        )
    return found[0] if found else None


def _us_to_ns(raw: str, path: Path, line: int, column: str) -> int:
    # torch_npu writes times with a trailing tab so spreadsheets keep every digit.
    text = (raw or "").strip()
    try:
        return round(float(text) * 1000.0)
    except ValueError:
        raise InputError(path, f"line {line}: {column} is not a number: {raw!r}") from None


def _kernel_rows(path: Path) -> Iterator[dict[str, Any]]:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(path, f"cannot open: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)} (header: {header})")
        reader.fieldnames = header
        for line, row in enumerate(reader, start=2):
            if None in row or any(row.get(c) is None for c in REQUIRED):
                raise InputError(path, f"line {line}: wrong number of fields (truncated row?)")
            shapes = (row.get("Input Shapes") or "").strip().strip('"') or None
            stream = (row.get("Stream ID") or "").strip()
            device = (row.get("Device_id") or "").strip()
            yield {
                "name": row["Name"].strip(),
                "ts_ns": _us_to_ns(row["Start Time(us)"], path, line, "Start Time(us)"),
                "dur_ns": _us_to_ns(row["Duration(us)"], path, line, "Duration(us)"),
                "stream": int(stream) if stream.isdigit() else None,
                "device": int(device) if device.isdigit() else None,
                "input_dims": shapes,
            }


def read_batches(
    path: str | Path, batch_size: int = 50_000, bad: kineto.BadEvents | None = None
) -> Iterator[dict[str, list[Any]]]:
    """Stream a torch_npu profile as ``profile_events`` column batches (``bad``: trace_view
    events skipped for their times, see ``kineto.read_batches``)."""
    root = Path(path)
    out = find_output_dir(root)
    if out is None:
        raise InputError(root, f"no {OUTPUT_DIR} directory (torch_npu profile) found")
    kernels = out / KERNEL_CSV
    if not kernels.is_file():
        raise InputError(out, f"{KERNEL_CSV} is missing (profile taken without NPU activity?)")
    batch = kineto.new_batch()
    n = 0
    for row in _kernel_rows(kernels):
        kineto.append_event(batch, n, {"ph": "X", "cat": "kernel", "name": row["name"],
                                       "pid": NPU_LANE, "tid": NPU_LANE, "ts": 0})  # fmt: skip
        batch["ts_ns"][-1], batch["dur_ns"][-1] = row["ts_ns"], row["dur_ns"]
        batch["stream"][-1], batch["device"][-1] = row["stream"], row["device"]
        batch["input_dims"][-1] = row["input_dims"]
        n += 1
        if len(batch["event_id"]) >= batch_size:
            yield batch
            batch = kineto.new_batch()
    view = out / TRACE_VIEW
    if view.is_file():
        for part in kineto.read_batches(view, batch_size, bad):
            for i in range(len(part["event_id"])):
                cat, ph = part["cat"][i], part["ph"][i]
                flow = ph in ("s", "f") and (cat, part["name"][i]) == NPU_FLOW
                if not (flow or (ph == "X" and cat in HOST_CATS)):
                    continue  # device rows of trace_view duplicate kernel_details.csv
                for col in kineto.COLUMNS:
                    batch[col].append(part[col][i])
                batch["event_id"][-1] = n
                if flow and ph == "f":
                    batch["pid"][-1] = batch["tid"][-1] = NPU_LANE
                n += 1
            if len(batch["event_id"]) >= batch_size:
                yield batch
                batch = kineto.new_batch()
    if batch["event_id"]:
        yield batch
