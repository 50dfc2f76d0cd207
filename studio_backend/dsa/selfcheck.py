"""Seed 004's schema self-check without torch: write a SYNTHETIC trace, read it back, validate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio_backend.dsa.schema import validate_record, validate_summary
from studio_backend.dsa.synthetic import generate_trace
from studio_backend.dsa.tracer import SUMMARY_FILE, TRACE_FILE
from studio_backend.errors import StudioError


def validate_trace_file(path: Path, limit_errors: int = 5) -> int:
    """Validate every line of ``path``; raise ``StudioError`` naming the first bad lines."""
    problems: list[str] = []
    n = 0
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):  # noqa: B007 - n is the count afterwards
            try:
                errs = validate_record(json.loads(line))
            except json.JSONDecodeError as exc:
                errs = [f"not JSON ({exc.msg})"]
            if errs and len(problems) < limit_errors:
                problems.append(f"line {n}: {'; '.join(errs)}")
    if problems:
        raise StudioError(f"{path}: schema violations: " + " | ".join(problems))
    return n


def selfcheck(
    out: Path, *, requests: int = 2, steps: int = 3, layers: int = 2, kv_block_size: int = 16
) -> dict[str, Any]:
    generate_trace(
        out, requests=requests, steps=steps, layers=layers, topk=32, prompt_len=128,
        shared_prefix=64, kv_block_size=kv_block_size, dataset="sanity_no_torch",
    )  # fmt: skip
    records = validate_trace_file(out / TRACE_FILE)
    summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    errs = validate_summary(summary)
    if errs:
        raise StudioError(f"{out / SUMMARY_FILE}: " + "; ".join(errs))
    if records != requests * steps * layers:
        raise StudioError(f"expected {requests * steps * layers} records, found {records}")
    return {"records": records, "summary": summary}
