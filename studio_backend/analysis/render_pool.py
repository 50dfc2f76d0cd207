"""The ``studio render`` worker pool, started before the parent's heavy imports and reads.

Light on purpose (no torch, DuckDB or pandas): the CLI starts the pool first thing, and each
worker pays its imports and its first off-screen render (render_worker.warm) on the other cores
while the parent imports the analysis stack, opens the workspace and pools the first grids.
"""

from __future__ import annotations

import os

from studio_backend.analysis.render_worker import warm
from studio_backend.procs import SafeProcessPool


def start_pool(fmt: str, workers: int | None = None) -> SafeProcessPool:
    """A spawn pool of ``workers`` (default: all cores) processes, each warming up at once.

    ``always=True``: a worker never re-imports the entry script (``studio`` imports the CLI and
    with it DuckDB and pandas), only the function it runs.
    """
    n = max(1, workers or os.cpu_count() or 1)
    pool = SafeProcessPool(n, "spawn", always=True)
    for _ in range(n):  # with spawn, each submit while no worker is idle starts one more
        pool.submit(warm, fmt)
    return pool
