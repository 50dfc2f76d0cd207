"""Whole-run comparison benchmark: two Qwen3-30B-A3B-shaped msit dumps (bench/ingest.py's shape),
TP=2 and TP=4 of one truth in bf16 with one module perturbed in B, compared by
``studio_backend.compare.runs.compare_runs`` against the time of reading both dumps once.

    python bench/compare.py [--layers 2 --tokens 1000 --repeats 5] [--baseline /path/to/old/checkout]

(a) read both dumps once: torch.load(weights_only=True) of every rank file of both dumps
    (bench/ingest.py's floor), nothing else
(b) studio compare: align both runs, read every aligned stitched tensor of both from the
    workspace (memory-mapped), all metrics per tensor and per token, first divergence, ranking
(b0) with --baseline DIR: the same compare_runs of another checkout (e.g. main before a change),
    in a subprocess on the same workspace, timed inside it after its own warm-up call
(c) for context, the studio's ingest of both dumps (catalog, stitch, verify, statistics) into
    a fresh workspace: what a user has already paid before comparing (--no-ingest skips it)
Both dumps are ingested once before timing (compare works on ingested runs). Before timing, the
metrics kernel is warmed up (numba: compiled on a machine's first use, seconds, then loaded from
its disk cache) and compare_runs is called once; both times are printed. (a), (b), (b0) and (c)
run interleaved, warm page cache, medians of --repeats; the ratio b / a is the issue's
criterion (<= 1.5). The load average is printed before and after: on a shared box, read the
ratios of one run, not absolute times across runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import QWEN3_30B, floor  # noqa: E402
from studio_backend.compare import metrics  # noqa: E402
from studio_backend.compare.runs import compare_runs  # noqa: E402
from studio_backend.dumps import synthetic as S  # noqa: E402
from studio_backend.dumps.ingest import ingest_dump  # noqa: E402
from studio_backend.workspace import open_workspace  # noqa: E402

FAULT_LAYER = 1


def make_dumps(root: Path, layers: int, tokens: int, decode: int) -> tuple[Path, Path, int, str]:
    cfg = S.SynthConfig(layers=layers, dense_layers=(), **QWEN3_30B)
    truth = S.make_truth(cfg, [tokens] + [1] * decode, seed=0, outlier=120.0)
    a = S.write_msit(root / "a", cfg, truth, 2, dtype=torch.bfloat16)
    bad = copy.deepcopy(truth)  # after A's write: it holds A's experts outputs, B splits them
    key = (0, f"model.layers.{min(FAULT_LAYER, layers - 1)}.self_attn.o_proj", "output", 0)
    bad[key] = bad[key] * np.float32(1.05)
    b = S.write_msit(root / "b", cfg, bad, 4, dtype=torch.bfloat16)
    size = sum(f.stat().st_size for d in (a, b) for f in d.rglob("*.pth"))
    return a, b, size, key[1]


BASELINE = """
import json, sys, time
from studio_backend.compare.runs import compare_runs
from studio_backend.workspace import open_workspace
ws = open_workspace(sys.argv[1], read_only=True)
compare_runs(ws, sys.argv[2], sys.argv[3])  # warm-up, as for (b)
t0 = time.perf_counter()
res = compare_runs(ws, sys.argv[2], sys.argv[3])
print(json.dumps([time.perf_counter() - t0, res.first and res.first["module"]]))
"""


def baseline(checkout: Path, ws: Path, ra: str, rb: str) -> tuple[float, str | None]:
    """compare_runs of another checkout, in a subprocess on this workspace (closed meanwhile)."""
    env = dict(os.environ, PYTHONPATH=f"{checkout}:{checkout / 'kernels'}")
    out = subprocess.run([sys.executable, "-c", BASELINE, str(ws), ra, rb], env=env, cwd=checkout,
                         capture_output=True, text=True, check=True)  # fmt: skip
    t, first = json.loads(out.stdout.strip().splitlines()[-1])
    return float(t), first


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=1000, help="prefill tokens (step 0)")
    ap.add_argument("--decode", type=int, default=1, help="decode steps after the prefill")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline", type=Path, help="another checkout's compare_runs, as (b0)")
    ap.add_argument("--no-ingest", action="store_true", help="skip (c)")
    ap.add_argument("--profile", action="store_true", help="cProfile one compare_runs at the end")
    ap.add_argument("--tmp", help="working folder (default: a temporary one)")
    args = ap.parse_args()
    print(f"command: python {' '.join(sys.argv)}; load average before: {load()}; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-compare-", dir=args.tmp) as tmp_s:
        tmp = Path(tmp_s)
        a, b, size, fault = make_dumps(tmp, args.layers, args.tokens, args.decode)
        ws = open_workspace(tmp / "ws")
        ra, rb = ingest_dump(ws, a), ingest_dump(ws, b)
        print(f"two dumps, {size / 1e9:.2f} GB of rank files ({args.layers} layers x "
              f"{args.tokens} tokens, Qwen3-30B-A3B widths, bf16, TP=2 vs TP=4)")  # fmt: skip
        t0 = time.perf_counter()
        metrics.warm()
        t1 = time.perf_counter()
        compare_runs(ws, ra, rb)
        t2 = time.perf_counter()
        print(f"warm-up (not timed): metrics kernel {t1 - t0:.2f} s (numba: compiled on first use "
              f"on a machine, then loaded from its cache), first compare_runs {t2 - t1:.2f} s")  # fmt: skip
        read_t, cmp_t, base_t, ing_t = [], [], [], []
        res = None
        for i in range(args.repeats):  # interleaved, so all see the same machine state
            if not args.no_ingest:
                t0 = time.perf_counter()
                w2 = open_workspace(tmp / f"ws-ingest-{i}")
                ingest_dump(w2, a), ingest_dump(w2, b)
                w2.close()
                ing_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            floor(a, tmp)
            floor(b, tmp)
            read_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = compare_runs(ws, ra, rb)
            cmp_t.append(time.perf_counter() - t0)
            if args.baseline:
                ws.close()
                bt, first = baseline(args.baseline, tmp / "ws", ra, rb)
                assert first == fault, first
                base_t.append(bt)
                ws = open_workspace(tmp / "ws")
        if args.profile:
            here = Path(__file__).resolve().parent  # bench/profile.py shadows the stdlib's
            sys.path[:] = [q for q in sys.path if Path(q or ".").resolve() != here]
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(compare_runs, ws, ra, rb)
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        ws.close()
    r, c = statistics.median(read_t), statistics.median(cmp_t)
    assert res is not None and res.first is not None and res.first["module"] == fault, res.first
    print(f"compared tensors: {len(res.table)}; first divergence: {res.first['label']} (planted)")
    print(f"(a) read both dumps once   {r:8.3f} s   {size / 1e6 / r:8.0f} MB/s   {_r(read_t)}")
    print(f"(b) studio compare         {c:8.3f} s   {size / 1e6 / c:8.0f} MB/s   {_r(cmp_t)}")
    if base_t:
        b0 = statistics.median(base_t)
        print(f"(b0) baseline compare      {b0:8.3f} s   {size / 1e6 / b0:8.0f} MB/s   {_r(base_t)}"
              f"   ({args.baseline})")  # fmt: skip
    if ing_t:
        g = statistics.median(ing_t)
        print(f"(c) studio ingest of both  {g:8.3f} s   {size / 1e6 / g:8.0f} MB/s   {_r(ing_t)}")
    ratios = [c_ / r_ for c_, r_ in zip(cmp_t, read_t, strict=True)]
    print(f"ratio b / a = {c / r:.2f} (criterion <= 1.5; per repeat {_r(ratios)})"
          + (f", b0 / a = {statistics.median(base_t) / r:.2f}" if base_t else "")
          + (f", b / c = {c / statistics.median(ing_t):.2f}" if ing_t else ""))  # fmt: skip
    print(f"load average after: {load()}; torch {torch.__version__}, numba {numba.__version__}, "
          f"{metrics.WORKERS} kernel threads, Python {platform.python_version()}")  # fmt: skip
    return 0


def _r(v: list[float]) -> str:
    return "[" + ", ".join(f"{x:.3f}" for x in v) + "]"


if __name__ == "__main__":
    sys.exit(main())
