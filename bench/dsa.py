"""Sparse-attention trace ingest and page-aggregate benchmark (docs/PERFORMANCE.md).

Generates a SYNTHETIC seeded trace in seed 004's schema (top-k 2048, 61 layers, block size 16),
streamed to disk, then, in the same run and interleaved, measures:
  baseline  line-by-line ``json.loads`` in one process (what a naive reader does), on the whole
            file or its first --baseline-rows rows (default 100,000),
  studio    ``Ingestor.poll`` into a fresh workspace: byte-level pre-parse in 2 worker
            processes + DuckDB's JSON reader on the stripped lines in this one (the worker pool
            starts in run 1 and is reused by later runs),
and afterwards the time of every aggregate the Sparse attention page runs, on the last run's
workspace. Throughputs are rows/s (and MB/s of JSON).

    python bench/dsa.py --rows 1000000 --repeat 1 --tmp /var/tmp/dsa1m  # 15 GB of JSON
    python bench/dsa.py --rows 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from studio_backend.dsa import analysis  # noqa: E402
from studio_backend.dsa.ingest import Ingestor, worker_count  # noqa: E402
from studio_backend.workspace import open_workspace  # noqa: E402

LAYERS, TOPK, BLOCK = 61, 2048, 16


def _tier(blocks: list[int], latency: int) -> dict:
    return {"hit_blocks": blocks, "bytes_read": len(blocks) * BLOCK * 656, "read_ops": 1,
            "latency_us": latency, "batch_size": len(blocks)}  # fmt: skip


EMPTY = {"hit_blocks": [], "bytes_read": 0, "read_ops": 0, "latency_us": None, "batch_size": 0}


def _sorted_unique(x: np.ndarray, n: int) -> np.ndarray:
    """``np.unique(x)`` for values in ``[0, n)`` (a bitmap: no sort)."""
    mask = np.zeros(n, bool)
    mask[x] = True
    return np.flatnonzero(mask)


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """SYNTHETIC rows: sinks + recent window + scattered middle, per (request, step, layer).

    Streams to ``path`` (1 M rows are about 15 GB). The numpy set operations are done with
    bitmaps; the output is byte for byte what the np.unique formulation gave.
    """
    rng = np.random.default_rng(seed)
    steps_per_req = 128
    n = 0
    sinks = np.arange(32)
    with open(path, "wb", buffering=16 << 20) as fh:
        req = 0
        while n < rows:
            prompt = int(rng.integers(6000, 14000))
            cached = int(rng.integers(0, 64)) if req else 0
            key = f"{req % 3:040x}"
            for step in range(steps_per_req):
                seq = prompt + step + 1
                wall = int(rng.integers(20000, 40000))
                base = rng.integers(0, seq, 1500)
                recent = np.arange(seq - 512, seq)
                for layer in range(LAYERS):
                    if n >= rows:
                        break
                    mid = (base + rng.integers(-64, 64, len(base)) * (layer % 4)) % seq
                    pos = _sorted_unique(np.concatenate([sinks, recent, mid]), seq)
                    pos = rng.permutation(pos)[:TOPK]
                    uniq = _sorted_unique(pos, seq)
                    off = (seq - 1) - uniq[::-1]
                    blk = uniq // BLOCK
                    first = np.flatnonzero(np.diff(blk, prepend=-1))  # sorted: run starts
                    blocks = blk[first]
                    tpb = np.diff(np.append(first, len(blk)))
                    tpb_s = np.sort(tpb)
                    bl = blocks.tolist()
                    inter = bl[: int(np.searchsorted(blocks, cached))]
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
                                   "prefix_key": key,
                                   "intersection_ratio": len(inter) / len(bl),
                                   "intersection_blocks": inter},
                        "selected_token_pos": pos.tolist(),
                        "scores_stats": {"min": 0.0, "mean": 1.0, "max": 2.0},
                    }  # fmt: skip
                    fh.write(orjson.dumps(rec) + b"\n")
                    n += 1
            req += 1
    return n


def baseline(path: Path, max_rows: int) -> tuple[float, int]:
    """Line-by-line ``json.loads`` of the first ``max_rows`` lines: (seconds, rows)."""
    n = 0
    t = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            json.loads(line)
            n += 1
            if n >= max_rows:
                break
    return time.perf_counter() - t, n


def prefix_bytes(path: Path, rows: int) -> int:
    """Bytes of the first ``rows`` lines."""
    done = total = 0
    with open(path, "rb") as fh:
        while done < rows and (buf := fh.read(64 << 20)):
            pos = -1
            for _ in range(min(rows - done, buf.count(b"\n"))):
                pos = buf.index(b"\n", pos + 1)
                done += 1
            total += pos + 1 if done == rows else len(buf)
    return total


def io_stall_s() -> float:
    """Seconds some task on the machine waited for I/O (Linux PSI), or NaN where unavailable."""
    try:
        with open("/proc/pressure/io", encoding="ascii") as fh:
            return int(fh.readline().rsplit("total=", 1)[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclass
class Run:
    seconds: float
    main_cpu: float  # CPU seconds of this process (DuckDB threads included)
    worker_cpu: float  # CPU seconds the worker processes spent pre-parsing
    load: float  # 1-minute load average right after the run


def studio_ingest(path: Path, ws_dir: Path) -> Run:
    ws = open_workspace(ws_dir)
    t, c = time.perf_counter(), time.process_time()
    ing = Ingestor(ws, path)
    ing.poll()
    run = Run(time.perf_counter() - t, time.process_time() - c, ing.worker_cpu_s,
              os.getloadavg()[0])  # fmt: skip
    ws.close()
    return run


def aggregates(path: Path, ws_dir: Path) -> dict[str, float]:
    """Every aggregate of the Sparse attention page on an ingested workspace (median of 3)."""
    ws = open_workspace(ws_dir)
    tid = Ingestor(ws, path).trace_id  # already ingested: nothing new to read
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


def _versions() -> str:
    out = []
    for dist in ("duckdb", "numpy", "orjson", "torch"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} -")
    return ", ".join(out)


def _trace(path: Path, rows: int) -> tuple[int, float]:
    """Generate ``path`` unless a previous run left it with the same row count."""
    meta = path.with_name(path.name + ".meta.json")
    if path.is_file() and meta.is_file():
        m = json.loads(meta.read_text())
        if m.get("rows") == rows and m.get("size") == path.stat().st_size:
            return rows, 0.0
    t = time.perf_counter()
    n = generate(path, rows)
    meta.write_text(json.dumps({"rows": n, "size": path.stat().st_size}))
    return n, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--baseline-rows",
        type=int,
        default=100_000,
        help="json.loads runs on at most this many leading rows (default 100000)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes of the studio ingest ($STUDIO_DSA_WORKERS; default 2"
        " on >= 2 cores, 0: single process)",
    )
    ap.add_argument(
        "--tmp",
        default="",
        help="scratch directory, kept (default: a new temp dir,"
        " removed); a trace left there by a run with the same --rows is reused",
    )
    args = ap.parse_args()  # fmt: skip
    if args.workers is not None:
        os.environ["STUDIO_DSA_WORKERS"] = str(args.workers)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench_dsa_"))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "trace_steps.jsonl"
    n, gen_s = _trace(path, args.rows)
    size = path.stat().st_size
    print(f"{n:,} rows, {size / 1e6:,.0f} MB ("
          + (f"generated in {gen_s:.1f} s" if gen_s else "reused") + f"; top-k {TOPK}, "
          f"{LAYERS} layers, block {BLOCK}; SYNTHETIC)")  # fmt: skip
    print(f"{os.cpu_count()} cores; {_versions()}; studio ingest workers: {worker_count()}")
    print("(I/O stall: seconds some task on the machine waited for I/O, /proc/pressure/io)")
    base_rows = min(n, args.baseline_rows)
    base_bytes = size if base_rows == n else prefix_bytes(path, base_rows)
    base, runs = [], []
    for i in range(args.repeat):  # interleaved so contention hits both alike
        load0, io0 = os.getloadavg()[0], io_stall_s()
        b, got = baseline(path, base_rows)
        assert got == base_rows
        base.append(b)
        io1 = io_stall_s()
        print(f"  run {i + 1}: json.loads {base_rows:,} rows {b:.2f} s (load {load0:.2f} before,"
              f" I/O stall {io1 - io0:.1f} s)")  # fmt: skip
        ws_dir = tmp / f"ws{i}"
        if ws_dir.exists():
            shutil.rmtree(ws_dir)
        r = studio_ingest(path, ws_dir)
        runs.append(r)
        print(f"  run {i + 1}: studio {n:,} rows {r.seconds:.2f} s, CPU {r.main_cpu:.2f} s here"
              f" + {r.worker_cpu:.2f} s in workers (load {r.load:.2f} after,"
              f" I/O stall {io_stall_s() - io1:.1f} s)")  # fmt: skip
        if i + 1 < args.repeat:
            shutil.rmtree(ws_dir)
    b = statistics.median(base)
    o = statistics.median(r.seconds for r in runs)
    subset = "" if base_rows == n else f" (leading {base_rows:,} of {n:,} rows)"
    print(
        f"json.loads line by line: {base_rows / b:,.0f} rows/s ({base_bytes / b / 1e6:,.0f} MB/s),"
        f" median of {args.repeat}{subset}"
    )
    print(f"studio ingest          : {n / o:,.0f} rows/s ({size / o / 1e6:,.0f} MB/s),"
          f" median of {args.repeat}")  # fmt: skip
    speedup = (n / o) / (base_rows / b)
    print(f"ingest speed-up vs json.loads: {speedup:.1f}x (target >= 5x; rows/s against rows/s)")
    aggs = aggregates(path, tmp / f"ws{args.repeat - 1}")
    for name, dt in aggs.items():
        print(f"  {name:30s} {dt * 1000:8.1f} ms")
    worst = max(aggs.values())
    print(f"slowest page aggregate: {worst * 1000:.0f} ms (target < 1000 ms)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    if not args.tmp:
        shutil.rmtree(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
