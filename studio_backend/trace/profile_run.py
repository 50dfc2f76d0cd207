"""Profile a forward pass with torch.profiler, every module annotated with its path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from studio_backend.trace.module_tracer import ModuleTracer


def profile_call(
    model: torch.nn.Module,
    run: Callable[[], Any],
    out: str | Path,
    *,
    with_stack: bool = False,
    cuda: bool | None = None,
) -> tuple[Path, ModuleTracer]:
    """Run ``run()`` under torch.profiler with a ``record_function(<module path>)`` around each
    module call of ``model``; write the Chrome trace to ``out`` and return it with the tracer."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU]
    if cuda if cuda is not None else torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    tracer = ModuleTracer(model, annotate=True)
    with profile(activities=activities, record_shapes=True, with_stack=with_stack) as prof:
        with tracer, torch.no_grad():
            run()
    prof.export_chrome_trace(str(out))
    return out, tracer
