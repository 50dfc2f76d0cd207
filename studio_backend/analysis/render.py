"""Batch export of activation surfaces (like the seed's visualize_outliers.py), on all cores.

The parent process reads tensors through the dumps query API and pools each one to a grid
(fast, and the workspace has a single DuckDB connection); worker processes then render the
small grids: PNG through PyVista off-screen (EGL/Mesa, no browser, no display) or
self-contained Plotly HTML (plotly.js inlined, opens offline).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from studio_backend.analysis import parts, source, views
from studio_backend.analysis.render_pool import start_pool
from studio_backend.analysis.render_worker import Job, render_one
from studio_backend.analysis.source import Selected
from studio_backend.errors import InputError, StudioError
from studio_backend.procs import SafeProcessPool
from studio_backend.timeline import mark
from studio_backend.workspace import Workspace

FORMATS = ("png", "html")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")


def file_name(sel: Selected, fmt: str) -> str:
    part = f".{sel.part}" if sel.part else ""
    return _UNSAFE.sub("_", f"{sel.module}{part}.{sel.io}_{sel.idx}.step{sel.step}.{fmt}")


def selections(
    ws: Workspace, run_id: str, *, pattern: str, io: str, step: int | None
) -> list[Selected]:
    """Floating tensors matching the pattern; fused outputs are split into Q/K/V, gate/up."""
    rows = source.tensors(ws, run_id, step=step, pattern=pattern, io=io)
    return _selected(rows, run_id, source.run_config(ws, run_id))


def _selected(rows: pd.DataFrame, run_id: str, cfg: dict) -> list[Selected]:
    rows = rows[~rows["dtype"].astype(str).str.contains("int")]
    out: list[Selected] = []
    for key, grp in rows.groupby(["step", "module", "io", "idx"], sort=True):
        st, module, io_, idx = key
        canonical = list(parts.parts_of(module, io_))  # q, k, v / gate, up
        stored = [p for p in grp["part"].tolist() if isinstance(p, str)]
        stored.sort(key=lambda p: canonical.index(p) if p in canonical else len(canonical))
        names = stored or (canonical if cfg or module.endswith("gate_up_proj") else [])
        for p in names or [None]:
            out.append(Selected(run_id, int(st), module, io_, int(idx), p))
    return out


def render(
    ws: Workspace,
    run_id: str,
    out_dir: Path,
    *,
    pattern: str,
    io: str = "output",
    step: int | None = 0,
    fmt: str = "png",
    workers: int | None = None,
    absolute: bool = False,
    log: bool = False,
    max_tokens: int = 400,
    max_channels: int = 800,
    progress: Callable[[Path], None] | None = None,
    pool: SafeProcessPool | None = None,
) -> list[Path]:
    """Render every matching tensor to ``out_dir``; returns the files written, in order.

    ``pool``: workers started earlier by ``render_pool.start_pool(fmt)`` (the CLI starts them
    before its own heavy imports); left open. Without it a pool is started here and closed.
    """
    if fmt not in FORMATS:
        raise InputError(fmt, f"format must be one of {', '.join(FORMATS)}")
    if io not in ("input", "output"):
        raise InputError(io, "io must be 'input' or 'output'")
    mark("render: selecting")
    rows = source.tensors(ws, run_id, step=step, pattern=pattern, io=io)
    cfg = source.run_config(ws, run_id)
    sels = _selected(rows, run_id, cfg)
    if not sels:
        where = f"step {step}" if step is not None else "any step"
        raise StudioError(f"no {io} tensor of {where} in run {run_id} matches {pattern!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = list(zip(sels, source.recipes_in(ws, sels, rows, cfg), strict=True))
    opts = {"fmt": fmt, "absolute": absolute, "log": log, "max_tokens": max_tokens,
            "max_channels": max_channels}  # fmt: skip
    if pool is None:
        n = max(1, min(workers or os.cpu_count() or 1, len(sels)))
        with start_pool(fmt, n) as own:
            return _render_all(ws, plan, own, out_dir, progress, **opts)
    return _render_all(ws, plan, pool, out_dir, progress, **opts)


def _render_all(
    ws: Workspace,
    plan: list[tuple[Selected, tuple[int, views.Recipe]]],
    pool: SafeProcessPool,
    out_dir: Path,
    progress: Callable[[Path], None] | None,
    *,
    fmt: str,
    absolute: bool,
    log: bool,
    max_tokens: int,
    max_channels: int,
) -> list[Path]:
    # spawn workers start clean (no inherited DuckDB handle, no half-initialised VTK). Each job
    # is submitted as soon as its grid is pooled, so workers render while the parent still reads.
    futures = []
    for sel, (tid, recipe) in plan:
        # pooled where the tensor is (on its Ray node for a run ingested over Ray)
        grid = views.run(ws, "grid", [tid], [recipe], max_tokens=max_tokens,
                         max_channels=max_channels, absolute=absolute, log=log)  # fmt: skip
        job = Job(sel.label, grid, out_dir / file_name(sel, fmt), fmt, absolute, log)
        futures.append(pool.submit(render_one, job))
    mark(f"render: {len(futures)} jobs submitted")
    written: list[Path] = []
    for fut in futures:
        written.append(fut.result())
        if progress:
            progress(written[-1])
    mark("render: all written")
    return written
