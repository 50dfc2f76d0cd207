"""Profile ingest benchmark: a large Chrome trace streamed into the workspace vs json.load.

Generates a SYNTHETIC, seeded Kineto-structured trace (module annotations, cpu ops, launches,
kernels, ac2g flows) of about --size-mb megabytes, written incrementally. Then, each in a fresh
subprocess so peak RSS is its own: (1) the studio's ingest (ijson stream -> DuckDB, attribution
included); (2) the baseline json.load of the whole file plus a per-name aggregation in Python,
skipped when memory does not allow it (about 12x the file size is needed). Prints times, peak RSS
and ratios, and checks the two per-name totals agree.

    python bench/profile.py --size-mb 500
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNELS = ["sm90_xmma_gemm_bf16bf16_bf16f32_tn", "paged_attention_v2_kernel",
           "fused_add_rms_norm_kernel", "rotary_embedding_kernel", "silu_and_mul_kernel",
           "fused_moe_kernel", "ncclDevKernel_AllReduce_Sum_bf16_RING_LL"]  # fmt: skip
OPS = ["aten::mm", "vllm::unified_attention", "_C::fused_add_rms_norm", "_C::rotary_embedding",
       "_C::silu_and_mul", "vllm::fused_moe", "c10d::allreduce_"]  # fmt: skip
MODULES = ["self_attn.qkv_proj", "self_attn.attn", "input_layernorm", "self_attn.rotary_emb",
           "mlp.act_fn", "mlp.experts", "mlp.down_proj"]  # fmt: skip


def generate(path: Path, size_mb: float, seed: int = 0) -> int:
    """Write the synthetic trace; returns the number of 'X' kernel events."""
    rng = random.Random(seed)
    target = int(size_mb * 1024 * 1024)
    host, ts, corr, ext, n_kernels = 4242, 1_000_000.0, 0, 0, 0
    with path.open("w", encoding="utf-8") as f:
        f.write('{"schemaVersion": 1, "deviceProperties": [], "traceEvents": [\n')
        first = True
        layer = 0
        while f.tell() < target:
            events = []
            for i, (kernel, op, mod) in enumerate(zip(KERNELS, OPS, MODULES, strict=True)):
                corr += 1
                ext += 1
                t0 = ts + i * 50.0
                kd = round(rng.uniform(1.0, 40.0), 3)
                events += [
                    {"ph": "X", "cat": "user_annotation", "name": f"model.layers.{layer}.{mod}",
                     "pid": host, "tid": host, "ts": t0, "dur": 40.0,
                     "args": {"External id": ext, "Record function id": 0}},
                    {"ph": "X", "cat": "cpu_op", "name": op, "pid": host, "tid": host,
                     "ts": t0 + 1, "dur": 30.0,
                     "args": {"External id": ext, "Sequence number": ext, "Fwd thread id": 0,
                              "Record function id": 0, "Input Dims": [[1, 7, 2048], [2048, 6144]],
                              "Input type": ["c10::BFloat16", "c10::BFloat16"]}},
                    {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": host,
                     "tid": host, "ts": t0 + 5, "dur": 4.0,
                     "args": {"External id": ext, "cbid": 211, "correlation": corr}},
                    {"ph": "X", "cat": "kernel", "name": kernel, "pid": 0, "tid": 7,
                     "ts": t0 + 100, "dur": kd,
                     "args": {"External id": ext, "queued": 0, "device": 0, "context": 1,
                              "stream": 7, "correlation": corr, "registers per thread": 128,
                              "shared memory": 49152, "blocks per SM": 1.2,
                              "warps per SM": 4.8, "grid": [132, 1, 1], "block": [128, 1, 1],
                              "est. achieved occupancy %": 12}},
                    {"ph": "s", "id": corr, "pid": host, "tid": host, "ts": t0 + 5,
                     "cat": "ac2g", "name": "ac2g"},
                    {"ph": "f", "id": corr, "pid": 0, "tid": 7, "ts": t0 + 100, "cat": "ac2g",
                     "name": "ac2g", "bp": "e"},
                ]  # fmt: skip
                n_kernels += 1
            ts += 400.0
            layer = (layer + 1) % 48
            chunk = ",\n".join(json.dumps(e) for e in events)
            f.write(chunk if first else ",\n" + chunk)
            first = False
        f.write('\n], "traceName": "synthetic"}\n')
    return n_kernels


def _child(mode: str, trace: Path, ws_dir: Path) -> None:
    """Run one measured job and print a JSON result line (runs in a fresh interpreter)."""
    if mode == "ingest":
        sys.path.insert(0, str(REPO))
        from studio_backend.trace import analysis
        from studio_backend.trace.ingest import ingest_profile
        from studio_backend.workspace import open_workspace

        ws = open_workspace(ws_dir)
    # imports (torch comes in with the workspace) are outside the measured span
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if mode == "ingest":
        pid = ingest_profile(ws, trace)
        t_ingest = time.perf_counter() - t0
        top = analysis.top(ws, pid, n=None)
        totals = dict(zip(top["name"], top["total_us"], strict=True))
        n = analysis.profile_info(ws, pid)["n_events"]
        ws.close()
        result = {"seconds": t_ingest, "events": n, "totals": totals}
    else:
        with trace.open("rb") as f:
            doc = json.load(f)
        totals: dict[str, float] = {}
        n = 0
        for e in doc["traceEvents"]:
            if e.get("ph") in ("X", "s", "f"):
                n += 1
            if e.get("ph") == "X" and e.get("cat") == "kernel":
                totals[e["name"]] = totals.get(e["name"], 0.0) + e["dur"]
        result = {"seconds": time.perf_counter() - t0, "events": n, "totals": totals}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    # CPU seconds are less inflated than wall time when the machine is shared.
    result["cpu_seconds"] = (usage.ru_utime + usage.ru_stime) - (before.ru_utime + before.ru_stime)
    result["rss_before_mb"] = before.ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def _run_child(mode: str, trace: Path, ws_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--trace", str(trace), "--ws", str(ws_dir)],
        capture_output=True, text=True, check=True, cwd=REPO,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def _available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=500.0)
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the json.load baseline")
    ap.add_argument("--child", choices=("ingest", "json"), help=argparse.SUPPRESS)
    ap.add_argument("--trace", help=argparse.SUPPRESS)
    ap.add_argument("--ws", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, Path(args.trace), Path(args.ws))
        return 0
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="profile-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    trace = scratch / "synthetic.pt.trace.json"
    t0 = time.perf_counter()
    n_kernels = generate(trace, args.size_mb)
    size = trace.stat().st_size / 1024 / 1024
    print(f"generated {size:.0f} MB synthetic Kineto trace ({n_kernels:,} kernels) "
          f"in {time.perf_counter() - t0:.1f} s")  # fmt: skip
    print(
        f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (contention inflates times)"
    )
    ingest = _run_child("ingest", trace, scratch / "ws")
    print(f"studio ingest : {ingest['seconds']:7.1f} s  {size / ingest['seconds']:6.1f} MB/s  "
          f"cpu {ingest['cpu_seconds']:6.1f} s  peak RSS {ingest['peak_rss_mb']:7.0f} MB "
          f"(after imports {ingest['rss_before_mb']:.0f} MB)  "
          f"events {ingest['events']:,}")  # fmt: skip
    need = size * 12
    if args.no_baseline or _available_mb() < need + 2048:
        print(f"baseline json.load skipped (needs ~{need:.0f} MB, {_available_mb():.0f} MB free)")
        return 0
    base = _run_child("json", trace, scratch / "ws-json")
    print(f"json.load     : {base['seconds']:7.1f} s  {size / base['seconds']:6.1f} MB/s  "
          f"cpu {base['cpu_seconds']:6.1f} s  peak RSS {base['peak_rss_mb']:7.0f} MB  "
          f"events {base['events']:,}")  # fmt: skip
    print(f"ratio ingest/json.load: time {ingest['seconds'] / base['seconds']:.2f}x, "
          f"cpu {ingest['cpu_seconds'] / base['cpu_seconds']:.2f}x, "
          f"peak RSS {ingest['peak_rss_mb'] / base['peak_rss_mb']:.2f}x")  # fmt: skip
    same = ingest["events"] == base["events"] and all(
        abs(ingest["totals"][k] - v) < 1e-6 * max(1.0, v) for k, v in base["totals"].items()
    )
    print(f"per-kernel totals and event counts agree: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
