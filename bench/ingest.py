"""Ingest benchmark: a Qwen3-30B-A3B-shaped msit dump (synthetic, seeded), four ways, interleaved.

    python bench/ingest.py --layers 7            # >= 2 GB, the issue's size
    python bench/ingest.py --layers 1 --tokens 1000 --repeats 3   # a few minutes on a laptop

(a) floor: torch.load(weights_only=True) of every file, nothing else
(b) seed-style baseline: per module load every rank, concatenate, np.save float32, one process
(c) studio: catalog + replica checks + stitch + store (tensors viewable): `Ingestor.ingest_all`
    with its 2 stitch threads; concatenated / split / summed tensors are written to the
    safetensors store, replicated ones (proven equal) are referenced in rank 0's file
(d) studio statistics over the stitched tensors
(e) streaming: a writer produces the dump at --rate MB/s while the watcher ingests it; the file
    closed -> viewable latency (p50 / p95) is reported.
Throughputs are dump bytes per second (the same numerator for all), medians of --repeats runs.
The numba kernels are loaded before the first repeat (their first call in a process costs ~1 s),
and every ratio is printed with the floor's MB/s of the same run and the load average.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio_backend.dumps import fused  # noqa: E402
from studio_backend.dumps import synthetic as S  # noqa: E402
from studio_backend.dumps.detect import detect  # noqa: E402
from studio_backend.dumps.ingest import Ingestor  # noqa: E402
from studio_backend.dumps.watch import DumpWatcher  # noqa: E402
from studio_backend.workspace import open_workspace  # noqa: E402

# watchdog warns about re-added inotify callbacks for folders created in quick succession
warnings.filterwarnings("ignore", category=RuntimeWarning, module="watchdog")
QWEN3_30B = dict(hidden=2048, heads=32, kv_heads=4, head_dim=128, intermediate=768, experts=128)


def make_dump(root: Path, layers: int, tokens: int, decode: int, tp: int) -> tuple[Path, int]:
    cfg = S.SynthConfig(layers=layers, dense_layers=(), **QWEN3_30B)
    truth = S.make_truth(cfg, [tokens] + [1] * decode, seed=0, outlier=120.0)
    session = S.write_msit(root, cfg, truth, tp, dtype=torch.bfloat16)
    size = sum(f.stat().st_size for f in session.rglob("*.pth"))
    return session, size


def floor(session: Path, _tmp: Path) -> None:
    for f in sorted(session.rglob("*.pth")):
        torch.load(f, weights_only=True)


def seed_baseline(session: Path, tmp: Path) -> None:
    """What the seed's stitch script does: concat column-parallel, rank 0 for the rest."""
    out = tmp / "seed_npy"
    tt = session / "torch_tensors"
    ranks = sorted(tt.iterdir())
    ranks = [r for r in ranks if r.is_dir()]
    for step_dir in sorted((ranks[0]).iterdir()):
        if not step_dir.is_dir():
            continue
        for mod in sorted(step_dir.iterdir()):
            name = mod.name.removeprefix("root.model.")
            concat = mod.name.endswith(("qkv_proj", "gate_up_proj"))
            for f in sorted(mod.iterdir()):
                shards = [
                    torch.load(r / step_dir.name / mod.name / f.name, weights_only=True)
                    for r in ranks
                ]
                t = torch.cat(shards, dim=-1) if concat else shards[0]
                d = out / f"step{step_dir.name}" / name
                d.mkdir(parents=True, exist_ok=True)
                np.save(d / (f.stem + ".npy"), t.float().numpy())
    shutil.rmtree(out)


def fresh_workspace(tmp: Path):  # noqa: ANN201
    """An empty workspace (created untimed: a user ingests into one that exists)."""
    ws_dir = tmp / "ws"
    shutil.rmtree(ws_dir, ignore_errors=True)
    return open_workspace(ws_dir)


def studio_stitch(session: Path, ws) -> Ingestor:  # noqa: ANN001
    ing = Ingestor(ws, detect(session), workers=2)
    ing.ingest_all(ing.layout.tensor_files())
    return ing


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def streaming(tmp: Path, layers: int, tokens: int, rate_mb_s: float) -> dict[str, float]:
    """Write a dump at ``rate_mb_s`` while a watcher ingests it; latency file closed -> viewable."""
    cfg = S.SynthConfig(layers=layers, dense_layers=(), **QWEN3_30B)
    truth = S.make_truth(cfg, [tokens, 1], seed=1)
    dump = tmp / "live"
    shutil.rmtree(dump, ignore_errors=True)  # a reused --tmp
    shutil.rmtree(tmp / "ws-live", ignore_errors=True)
    dump.mkdir()
    ws = open_workspace(tmp / "ws-live")
    w = DumpWatcher(ws, dump, model_config=cfg.hf_config(), stable_s=0.05, poll_s=0.02).start()
    tt = dump / "msit_dump_20261123_030000" / "torch_tensors"
    items = list(S.rank_tensors(cfg, truth, 4, torch.bfloat16, 1))
    t0 = time.perf_counter()
    written = 0
    for step, module, io_, idx, r, t in items:
        d = tt / f"npu{r}_{4000 + r}" / str(step) / f"root.{module}"
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(t, buf)
        (d / (f"{io_}.pth" if idx == 0 and io_ == "output" else f"{io_}_{idx}.pth")).write_bytes(
            buf.getvalue()
        )
        written += len(buf.getvalue())
        ahead = written / (rate_mb_s * 1e6) - (time.perf_counter() - t0)
        if ahead > 0:
            time.sleep(ahead)
    write_s = time.perf_counter() - t0
    # let the watcher drain, then finish the run
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (
        w.progress is None or w.progress.files_done < len(items)
    ):
        time.sleep(0.05)
    first_stats_after_first_view = w.progress.stats_done if w.progress else 0
    w.stop(finish=True)
    lat = sorted(w.progress.latencies_s)
    ws.close()
    return {
        "mb": written / 1e6, "write_mb_s": written / 1e6 / write_s, "files": len(items),
        "p50": lat[len(lat) // 2], "p95": lat[int(0.95 * (len(lat) - 1))], "max": lat[-1],
        "stats_when_drained": first_stats_after_first_view, "stitched": len(lat),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--layers", type=int, default=7, help="decoder layers (7 gives >= 2 GB at 2000 tokens)"
    )
    ap.add_argument("--tokens", type=int, default=2000, help="prefill tokens (step 0)")
    ap.add_argument("--decode", type=int, default=2, help="decode steps after the prefill")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0, help="MB/s of the streaming writer")
    ap.add_argument("--stream-layers", type=int, default=1)
    ap.add_argument("--tmp", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-ingest-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        t, (session, size) = timed(
            make_dump, tmp / "dump", args.layers, args.tokens, args.decode, 4
        )
        print(f"dump: {size / 1e9:.2f} GB, {sum(1 for _ in session.rglob('*.pth'))} files, 4 ranks, "
              f"{args.layers} layers, {args.tokens} prefill tokens + {args.decode} decode steps, bf16 "
              f"(written in {t:.1f} s)")  # fmt: skip
        print("command: python " + " ".join(sys.argv))
        fused.warm_up()  # untimed: numba's start-up and each kernel's cache load
        times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
        loads: list[float] = []
        for rep in range(args.repeats):
            times["a"].append(timed(floor, session, tmp)[0])
            times["b"].append(timed(seed_baseline, session, tmp)[0])
            tc, ing = timed(studio_stitch, session, fresh_workspace(tmp))
            times["c"].append(tc)
            times["d"].append(timed(ing.compute_stats)[0])
            ing.ws.close()
            loads.append(os.getloadavg()[0])
            fl = size / 1e6 / times["a"][-1]
            print(
                f"  repeat {rep + 1}: "
                + "  ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
                + f"  | floor {fl:.0f} MB/s, (c) {times['a'][-1] / times['c'][-1] * 100:.1f} %, "
                f"(d) {times['a'][-1] / times['d'][-1] * 100:.1f} % of floor | load {loads[-1]:.2f}",
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        mbs = {k: size / 1e6 / v for k, v in med.items()}
        names = {"a": "floor (torch.load only)", "b": "seed-style baseline", "c": "studio stitch+store",
                 "d": "studio statistics"}  # fmt: skip
        print(f"\nmedian of {args.repeats} (page cache warm; load average {min(loads):.2f}-"
              f"{max(loads):.2f}; floor {mbs['a']:.0f} MB/s):")  # fmt: skip
        for k in "abcd":
            print(
                f"  ({k}) {names[k]:<26} {med[k]:7.2f} s  {mbs[k]:8.1f} MB/s  {mbs[k] / mbs['a'] * 100:6.1f} % of floor ({mbs['a']:.0f} MB/s)"
            )
        print(f"  (c) vs (b): {med['b'] / med['c']:.2f}x faster")
        live = streaming(tmp, args.stream_layers, args.tokens, args.rate)
        print(f"\nstreaming: {live['mb']:.0f} MB in {live['files']} files written at {live['write_mb_s']:.0f} MB/s; "
              f"file closed -> viewable latency p50 {live['p50']:.3f} s, p95 {live['p95']:.3f} s, "
              f"max {live['max']:.3f} s over {live['stitched']} stitched tensors")  # fmt: skip
        targets = {
            "(c) >= 60 % of floor": mbs["c"] >= 0.6 * mbs["a"], "(c) faster than (b)": med["c"] < med["b"],
            "(d) >= 20 % of floor": mbs["d"] >= 0.2 * mbs["a"], "p95 latency < 1 s": live["p95"] < 1.0,
        }  # fmt: skip
        print(
            "targets: " + "; ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in targets.items())
        )
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
