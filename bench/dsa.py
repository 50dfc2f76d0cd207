"""Sparse-attention trace ingest and page-aggregate benchmark (docs/PERFORMANCE.md).

Generates a SYNTHETIC seeded trace in seed 004's schema (top-k 2048, 61 layers, block size 16),
then, in the same run and interleaved, measures:
  baseline  line-by-line ``json.loads`` of the file (what a naive reader does),
  studio    ``Ingestor.poll`` into a fresh workspace (DuckDB JSON reader + block aggregate),
and afterwards the time of every aggregate the Sparse attention page runs.

    python bench/dsa.py --rows 1000000          # the target size (about 15 GB of JSON)
    python bench/dsa.py --rows 20000 --repeat 3  # what fits a shared 2-core box
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.dsa import analysis  # noqa: E402
from backend.dsa.ingest import Ingestor  # noqa: E402
from backend.workspace import open_workspace  # noqa: E402

LAYERS, TOPK, BLOCK = 61, 2048, 16


def _tier(blocks: list[int], latency: int) -> dict:
    return {"hit_blocks": blocks, "bytes_read": len(blocks) * BLOCK * 656, "read_ops": 1,
            "latency_us": latency, "batch_size": len(blocks)}  # fmt: skip


EMPTY = {"hit_blocks": [], "bytes_read": 0, "read_ops": 0, "latency_us": None, "batch_size": 0}


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """SYNTHETIC rows: sinks + recent window + scattered middle, per (request, step, layer)."""
    rng = np.random.default_rng(seed)
    steps_per_req = 128
    n = 0
    with open(path, "wb") as fh:
        req = 0
        while n < rows:
            prompt = int(rng.integers(6000, 14000))
            cached = int(rng.integers(0, 64)) if req else 0
            for step in range(steps_per_req):
                seq = prompt + step + 1
                wall = int(rng.integers(20000, 40000))
                base = rng.integers(0, seq, 1500)
                for layer in range(LAYERS):
                    if n >= rows:
                        break
                    mid = (base + rng.integers(-64, 64, len(base)) * (layer % 4)) % seq
                    pos = np.unique(np.concatenate([np.arange(32), np.arange(seq - 512, seq), mid]))
                    pos = rng.permutation(pos)[:TOPK]
                    uniq = np.sort(pos)
                    off = (seq - 1) - uniq[::-1]
                    blocks, tpb = np.unique(uniq // BLOCK, return_counts=True)
                    tpb_s = np.sort(tpb)
                    bl = blocks.tolist()
                    inter = [b for b in bl if b < cached]
                    rec = {
                        "event": "dsa_topk", "run_name": "bench", "dataset": "synthetic",
                        "rank": 0, "world_size": 1, "request_id": req, "layer_id": layer,
                        "step_idx": seq - 1, "seq_len_current": seq,
                        "unique_token_pos_count": len(uniq), "offset_min": int(off[0]),
                        "offset_p50": int(off[int(round((len(off) - 1) * 0.5))]),
                        "offset_max": int(off[-1]), "block_size_tokens": BLOCK,
                        "selected_block_ids": bl, "unique_blocks": len(bl),
                        "tokens_per_touched_block": {
                            "mean": float(tpb.mean()),
                            "p50": int(tpb_s[int(round((len(tpb_s) - 1) * 0.5))]),
                            "p95": int(tpb_s[int(round((len(tpb_s) - 1) * 0.95))]),
                        },
                        "kv_fetch": {"hbm": _tier(bl, wall), "local_pool": EMPTY,
                                     "remote_pool": EMPTY},
                        "prefix": {"prefix_cache_hit": cached > 0, "prefix_cached_blocks": cached,
                                   "prefix_key": f"{req % 3:040x}",
                                   "intersection_ratio": len(inter) / len(bl),
                                   "intersection_blocks": inter},
                        "selected_token_pos": pos.tolist(),
                        "scores_stats": {"min": 0.0, "mean": 1.0, "max": 2.0},
                    }  # fmt: skip
                    fh.write(orjson.dumps(rec) + b"\n")
                    n += 1
            req += 1
    return n


def baseline(path: Path) -> float:
    t = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)
    return time.perf_counter() - t


def studio_ingest(path: Path, tmp: Path) -> float:
    ws_dir = tmp / f"ws{time.monotonic_ns()}"
    ws = open_workspace(ws_dir)
    t = time.perf_counter()
    Ingestor(ws, path).poll()
    dt = time.perf_counter() - t
    ws.close()
    shutil.rmtree(ws_dir)
    return dt


def aggregates(path: Path, tmp: Path) -> dict[str, float]:
    ws = open_workspace(tmp / "ws-final")
    ing = Ingestor(ws, path)
    ing.poll()
    tid = ing.trace_id
    reqs = analysis.requests(ws, tid)
    req = int(reqs.request_id.iloc[-1])
    lo, hi = analysis.layer_span(ws, tid)
    caps = np.unique(np.geomspace(1, 1024, 24).astype(int)).tolist()
    calls = {
        "requests": lambda: analysis.requests(ws, tid),
        "heatmap (all layers)": lambda: analysis.heatmap(ws, tid, req, lo, hi),
        "heatmap (layers 10-20)": lambda: analysis.heatmap(ws, tid, req, 10, 20),
        "record distributions": lambda: analysis.record_distributions(ws, tid),
        "unique blocks histogram": lambda: analysis.value_counts(ws, tid, "unique_blocks"),
        "tokens/block histogram": lambda: analysis.value_counts(ws, tid, "tpb_mean", bins=30),
        "offset histograms (2)": lambda: (
            analysis.value_counts(ws, tid, "offset_p50", bins=40),
            analysis.value_counts(ws, tid, "offset_max", bins=40),
        ),
        "intersection histogram": lambda: analysis.value_counts(
            ws, tid, "intersection_ratio", bins=20
        ),
        "prefix hot blocks (request)": lambda: analysis.prefix_hot_blocks(ws, tid, req),
        "block popularity CDF": lambda: analysis.block_popularity(ws, tid),
        "recency histogram": lambda: analysis.recency_histogram(ws, tid, req, lo, hi),
        "LRU hit ratio curve": lambda: analysis.lru_curve(ws, tid, caps, lo, hi, [req]),
        "Jaccard steps + layers": lambda: analysis.jaccard(ws, tid, req),
        "kv_fetch tiers": lambda: analysis.tier_breakdown(ws, tid),
        "step latency percentiles": lambda: analysis.step_latency(ws, tid),
    }
    out = {}
    for name, fn in calls.items():
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    ws.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tmp", default="", help="scratch directory (default: a new temp dir)")
    args = ap.parse_args()
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench_dsa_"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "trace_steps.jsonl"
    t = time.perf_counter()
    n = generate(path, args.rows)
    size = path.stat().st_size
    print(f"generated {n:,} rows, {size / 1e6:,.0f} MB in {time.perf_counter() - t:.1f} s "
          f"(top-k {TOPK}, {LAYERS} layers, block {BLOCK}; SYNTHETIC)")  # fmt: skip
    base, ours = [], []
    for _ in range(args.repeat):  # interleaved so contention hits both alike
        base.append(baseline(path))
        ours.append(studio_ingest(path, tmp))
    b, o = statistics.median(base), statistics.median(ours)
    print(
        f"json.loads line by line: {n / b:,.0f} rows/s ({size / b / 1e6:,.0f} MB/s), median of {args.repeat}"
    )
    print(
        f"studio ingest          : {n / o:,.0f} rows/s ({size / o / 1e6:,.0f} MB/s), median of {args.repeat}"
    )
    print(f"ingest speed-up vs json.loads: {b / o:.1f}x (target >= 5x)")
    aggs = aggregates(path, tmp)
    for name, dt in aggs.items():
        print(f"  {name:30s} {dt * 1000:8.1f} ms")
    worst = max(aggs.values())
    print(f"slowest page aggregate: {worst * 1000:.0f} ms (target < 1000 ms)")
    if not args.tmp:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
