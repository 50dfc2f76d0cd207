"""Whole-run comparison benchmark: two Qwen3-30B-A3B-shaped msit dumps (bench/ingest.py's shape),
TP=2 and TP=4 of one truth in bf16 with one module perturbed in B, compared by
``backend.compare.runs.compare_runs`` against the time of reading both dumps once.

    python bench/compare.py --layers 2 --tokens 1000 --repeats 3

(a) read both dumps once: torch.load(weights_only=True) of every rank file of both dumps
    (bench/ingest.py's floor), nothing else
(b) studio compare: align both runs, read every aligned stitched tensor of both from the
    workspace (memory-mapped), all metrics per tensor and per token, first divergence, ranking
(c) for context, the studio's ingest of both dumps (catalog, stitch, verify, statistics) into
    a fresh workspace: what a user has already paid before comparing
Both dumps are ingested once before timing (compare works on ingested runs). (a), (b) and (c)
run interleaved, warm page cache, medians of --repeats; the ratio b / a is the issue's
criterion (<= 1.5).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.compare.runs import compare_runs  # noqa: E402
from backend.dumps import synthetic as S  # noqa: E402
from backend.dumps.ingest import ingest_dump  # noqa: E402
from backend.workspace import open_workspace  # noqa: E402
from bench.ingest import QWEN3_30B, floor  # noqa: E402

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=1000, help="prefill tokens (step 0)")
    ap.add_argument("--decode", type=int, default=1, help="decode steps after the prefill")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tmp", help="working folder (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-compare-", dir=args.tmp) as tmp_s:
        tmp = Path(tmp_s)
        a, b, size, fault = make_dumps(tmp, args.layers, args.tokens, args.decode)
        ws = open_workspace(tmp / "ws")
        ra, rb = ingest_dump(ws, a), ingest_dump(ws, b)
        print(f"two dumps, {size / 1e9:.2f} GB of rank files ({args.layers} layers x "
              f"{args.tokens} tokens, Qwen3-30B-A3B widths, bf16, TP=2 vs TP=4)")  # fmt: skip
        read_t, cmp_t, ing_t = [], [], []
        res = None
        for i in range(args.repeats):  # interleaved, so all see the same machine state
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
        ws.close()
    r, c, g = statistics.median(read_t), statistics.median(cmp_t), statistics.median(ing_t)
    assert res is not None and res.first is not None and res.first["module"] == fault, res.first
    print(f"compared tensors: {len(res.table)}; first divergence: {res.first['label']} (planted)")
    print(f"(a) read both dumps once   {r:8.2f} s   {size / 1e6 / r:8.0f} MB/s   {read_t}")
    print(f"(b) studio compare         {c:8.2f} s   {size / 1e6 / c:8.0f} MB/s   {cmp_t}")
    print(f"(c) studio ingest of both  {g:8.2f} s   {size / 1e6 / g:8.0f} MB/s   {ing_t}")
    print(f"ratio b / a = {c / r:.2f} (criterion <= 1.5), b / c = {c / g:.2f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.machine()}, Python {platform.python_version()}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
