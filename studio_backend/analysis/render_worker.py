"""What a ``studio render`` worker process runs: one pooled grid to one PNG or HTML file, every
PNG of a worker drawn in its one off-screen window (``PngWriter``), opened by ``warm``.

Kept apart from render.py on purpose: a spawned worker imports only this module, numpy and the
figure code (plain VTK for PNG: no PyVista, no matplotlib), not torch, DuckDB or pandas, so it
starts in a fraction of the time (docs/PERFORMANCE.md "`studio render`").
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio_backend.analysis.grid import Grid
from studio_backend.timeline import mark

_writer = None  # this worker's PngWriter: one off-screen window for all its images


@dataclass(frozen=True)
class Job:
    title: str
    grid: Grid
    path: Path
    fmt: str
    absolute: bool
    log: bool


def warm(fmt: str) -> None:
    """Pay a worker's one-time costs while the parent still imports and reads: the figure code's
    imports and, for PNG, the off-screen OpenGL context (EGL, Mesa) with a first tiny render."""
    mark("worker start")
    if fmt == "png":
        v = np.array([[0.0, 1.0], [-1.0, 0.5]], dtype=np.float32)
        i = np.array([[0, 0], [1, 1]])
        ax = np.arange(2)
        _png_writer().write(Grid(v, v, i, i.T, ax, ax, False, (2, 2)), None, title="warm-up")
    else:
        from studio_ui.figures import activations  # noqa: F401
    mark("worker warm")


def _png_writer():
    global _writer
    if _writer is None:
        from studio_ui.figures.vtk_scene import PngWriter

        _writer = PngWriter()
        # Tearing down VTK, EGL and Mesa at exit took 0.3-0.7 s per worker, and the CLI waits
        # for its workers to exit: every file is written and closed before its job returns, so
        # the worker leaves at once (the pool does not read a finished worker's exit code).
        if multiprocessing.parent_process() is not None:  # only in a pool worker, never a caller
            atexit.register(_leave_now)
        mark("worker: window open")
    return _writer


def _leave_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def render_one(job: Job) -> Path:
    if job.fmt == "png":
        from studio_ui.figures.style import value_label

        _png_writer().write(job.grid, job.path, title=job.title, absolute=job.absolute,
                            label=value_label(job.absolute, job.log))  # fmt: skip
    else:
        from studio_ui.figures.activations import figure_html, surface_figure

        fig = surface_figure(job.grid, title=job.title, absolute=job.absolute, log=job.log)
        job.path.write_text(figure_html(fig), encoding="utf-8")
    mark(f"wrote {job.path.name}")
    return job.path
