"""Benchmark: the Activations surface for a 2000 x 6144 bf16 tensor from the tensor store (warm).

Studio path: memory-mapped load from the workspace's safetensors store, signed max-|x| pooling to
a 400 x 800 grid, Plotly surface figure, JSON serialisation (what the browser receives).
Baseline (same run): the naive figure at full resolution (one surface of 2000 x 6144 points).
Interleaved repetitions, median reported. Data: seeded synthetic normal values with planted
outlier channels (labelled synthetic).

    python bench/render.py [--tokens 2000] [--channels 6144] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.analysis.lod import as_matrix, build_grid  # noqa: E402
from backend.workspace import open_workspace  # noqa: E402
from studio.figures.activations import surface_figure  # noqa: E402


def studio_path(ws, group: str) -> int:
    x = ws.tensors.get(group, "x")
    grid = build_grid(x, max_tokens=400, max_channels=800)
    return len(surface_figure(grid, title="bench").to_json())


def naive_path(ws, group: str) -> int:
    x = as_matrix(ws.tensors.get(group, "x")).numpy()
    fig = go.Figure(go.Surface(z=x))
    return len(fig.to_json())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=6144)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.channels)
    x[:, [7, 1500, 4000]] *= 60.0  # planted outlier channels
    x = x.to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as d:
        ws = open_workspace(Path(d) / "ws")
        ws.tensors.put("bench/render", {"x": x})
        studio_path(ws, "bench/render")  # warm: page cache, imports, plotly validators
        naive_path(ws, "bench/render")
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
    print(f"tensor {args.tokens} x {args.channels} bf16, {args.repeat} warm repetitions (median)")
    print(f"studio (pooled 400 x 800): {mo * 1000:8.1f} ms  payload {n_ours / 1e6:6.1f} MB")
    print(f"naive full resolution    : {mn * 1000:8.1f} ms  payload {n_naive / 1e6:6.1f} MB")
    print(f"speedup {mn / mo:.1f}x, payload {n_naive / n_ours:.1f}x smaller; target < 300 ms: "
          f"{'met' if mo < 0.3 else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
