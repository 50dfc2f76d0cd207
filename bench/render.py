"""Benchmark: the Activations surface for a 2000 x 6144 bf16 tensor from the tensor store (warm).

Studio path: memory-mapped load from the workspace's safetensors store, signed max-|x| pooling to
a 400 x 800 grid, Plotly surface figure, JSON serialisation (what the browser receives).
Baseline (same run): the naive figure at full resolution (one surface of 2000 x 6144 points).
Interleaved repetitions, median reported. Data: seeded synthetic normal values with planted
outlier channels (labelled synthetic).

    python bench/render.py [--tokens 2000] [--channels 6144] [--repeat 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio_backend.analysis.lod import as_matrix, build_grid  # noqa: E402
from studio_backend.workspace import open_workspace  # noqa: E402
from studio_ui.figures.activations import surface_figure  # noqa: E402

PHASES: dict[str, list[float]] = {"load": [], "pool": [], "figure": [], "json": []}


def studio_path(ws, group: str) -> int:
    t0 = time.perf_counter()
    x = ws.tensors.get(group, "x")
    t1 = time.perf_counter()
    grid = build_grid(x, max_tokens=400, max_channels=800)
    t2 = time.perf_counter()
    fig = surface_figure(grid, title="bench")
    t3 = time.perf_counter()
    n = len(fig.to_json())
    t4 = time.perf_counter()
    for k, a, b in (("load", t0, t1), ("pool", t1, t2), ("figure", t2, t3), ("json", t3, t4)):
        PHASES[k].append(b - a)
    return n


def naive_path(ws, group: str) -> int:
    x = as_matrix(ws.tensors.get(group, "x")).numpy()
    fig = go.Figure(go.Surface(z=x))
    return len(fig.to_json())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=6144)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.channels)
    x[:, [7, 1500, 4000]] *= 60.0  # planted outlier channels
    x = x.to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as d:
        ws = open_workspace(Path(d) / "ws")
        ws.tensors.put("bench/render", {"x": x})
        studio_path(ws, "bench/render")  # warm: page cache, imports, plotly validators
        naive_path(ws, "bench/render")
        for v in PHASES.values():
            v.clear()
        ours, naive = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            n_ours = studio_path(ws, "bench/render")
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            n_naive = naive_path(ws, "bench/render")
            naive.append(time.perf_counter() - t)
        ws.close()
    mo, mn = statistics.median(ours), statistics.median(naive)
    print(f"tensor {args.tokens} x {args.channels} bf16, {args.repeat} warm repetitions (median), "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"studio (pooled 400 x 800): {mo * 1000:8.1f} ms  payload {n_ours / 1e6:6.1f} MB")
    print(f"naive full resolution    : {mn * 1000:8.1f} ms  payload {n_naive / 1e6:6.1f} MB")
    print("studio phases (ms): " + ", ".join(
        f"{k} {statistics.median(v) * 1000:.1f}" for k, v in PHASES.items()))  # fmt: skip
    print(f"speedup {mn / mo:.1f}x, payload {n_naive / n_ours:.1f}x smaller; target < 300 ms: "
          f"{'met' if mo < 0.3 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
