"""What a ``studio render`` worker process runs: one pooled grid to one PNG or HTML file.

Kept apart from render.py on purpose: a spawned worker imports only this module, numpy and the
figure code (PyVista for PNG), not torch, DuckDB or pandas, so it starts in a fraction of the
time (docs/PERFORMANCE.md "`studio render`").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.analysis.grid import Grid


@dataclass(frozen=True)
class Job:
    title: str
    grid: Grid
    path: Path
    fmt: str
    absolute: bool
    log: bool


def render_one(job: Job) -> Path:
    if job.fmt == "png":
        from studio.figures import pyvista_surface as pvs
        from studio.figures.style import value_label

        return pvs.screenshot(job.grid, job.path, title=job.title, absolute=job.absolute,
                              label=value_label(job.absolute, job.log))  # fmt: skip
    from studio.figures.activations import figure_html, surface_figure

    fig = surface_figure(job.grid, title=job.title, absolute=job.absolute, log=job.log)
    job.path.write_text(figure_html(fig), encoding="utf-8")
    return job.path
