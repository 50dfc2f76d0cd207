"""BurstGPT CSV arrival replay: single worker, FIFO queue, batches of up to ``batch_size``.

CSV columns: ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`` (no prefix
identity, so prompts are content-free). A request's latency is its queueing delay plus the
measured service time of the batch it ran in (seed 004's run_burstgpt model).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from studio_backend.dsa.workloads import Request
from studio_backend.errors import InputError


def load_burstgpt(path: Path, limit: int = 0, max_prompt_tokens: int = 0) -> list[Request]:
    reqs: list[tuple[float, int, int]] = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    t = float(row.get("Timestamp") or row.get("timestamp") or 0.0)
                    n_in = int(float(row.get("Request tokens") or row.get("request_tokens") or 0))
                    n_out = int(
                        float(row.get("Response tokens") or row.get("response_tokens") or 0)
                    )
                except ValueError:
                    continue
                reqs.append((t, n_in, n_out))
                if limit and len(reqs) >= limit:
                    break
    except OSError as exc:
        raise InputError(path, f"cannot read BurstGPT CSV ({exc})") from exc
    if not reqs:
        raise InputError(path, "no usable rows (need Timestamp, Request tokens, Response tokens)")
    reqs.sort(key=lambda r: r[0])
    t0 = reqs[0][0]
    out = []
    for i, (t, n_in, n_out) in enumerate(reqs):
        n = max(1, min(n_in, max_prompt_tokens) if max_prompt_tokens else n_in)
        out.append(Request(i, "a" * n, "", arrival_s=t - t0, max_new_tokens=max(1, n_out)))
    return out


def replay(
    reqs: Sequence[Request],
    batch_size: int,
    serve: Callable[[list[Request]], float],
) -> list[float]:
    """Latencies (ms) of ``reqs`` replayed FIFO; ``serve(batch)`` runs a batch, returns seconds."""
    now = 0.0
    i = 0
    queue: list[Request] = []
    lat: list[float] = []
    while i < len(reqs) or queue:
        while i < len(reqs) and reqs[i].arrival_s <= now:
            queue.append(reqs[i])
            i += 1
        if not queue:
            now = reqs[i].arrival_s
            continue
        batch, queue = queue[:batch_size], queue[batch_size:]
        service = serve(batch)
        lat += [(now - r.arrival_s + service) * 1000.0 for r in batch]
        now += service
    return lat
