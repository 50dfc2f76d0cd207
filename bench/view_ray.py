"""What a 3D view of a tensor on another Ray node moves, against the tensor itself.

    python bench/view_ray.py                    # 2000 x 2048 bf16 (one Qwen3-30B-A3B activation)
    python bench/view_ray.py --tokens 8000 --hidden 2048 --repeats 5

A local two-node ``ray.cluster_utils.Cluster`` (127.0.0.1 only); the tensor's file is assigned to
the worker node (the studio's process is the driver on the head). For each drawn-cell budget of
the Activations page (20k, 80k = the default, 320k, 720k) and for ``studio render``'s 400 x 800
grid, the view asks the node (``studio_backend.analysis.views.run`` -> ``where.compute``, a task pinned
to that node) and the bytes are Ray's own size of the returned object
(``ray.experimental.get_object_locations``: ``where.MOVED``). The explicit full download
(``where.fetch``) is measured the same way, interleaved. Times are medians, warm (one untimed
call each first: the node's worker imports torch once). Every grid is checked against
``lod.build_grid`` of the tensor here (exact).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, before ray
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from studio_backend.analysis import lod  # noqa: E402
from studio_backend.analysis.views import Recipe  # noqa: E402
from studio_backend.dumps.cluster import where  # noqa: E402

BUDGETS = {"20k cells": 20_000, "80k cells (page default)": 80_000, "320k cells": 320_000,
           "720k cells": 720_000}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"command: python bench/view_ray.py {shlex.join(sys.argv[1:])}")
    print(f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, load average "
          f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"ray {ray.__version__}")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    t = (torch.randn(args.tokens, args.hidden, generator=g) * 0.5).bfloat16()
    t[args.tokens // 2, 7] = -420.0  # a massive activation: kept exactly by every grid
    tmp = Path(tempfile.mkdtemp(prefix="bench-view-ray-"))
    path = tmp / "act.pt"
    torch.save(t, path)
    node = {"num_cpus": 1, "object_store_memory": 256 << 20}
    cluster = Cluster(initialize_head=True, head_node_args=node)
    try:
        worker = cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        w = where.Where("bench", cluster.address, "rank0", str(tmp), str(tmp), None, None,
                        str(path))  # fmt: skip
        where._NODES[(cluster.address, str(path))] = worker.node_id  # the file is on the worker
        print(f"tensor: {args.tokens} x {args.hidden} bf16 = {t.nbytes} B on node "
              f"{worker.node_id[:12]} (the driver is on the head)")  # fmt: skip

        def view(kw: dict) -> tuple[object, int, float]:
            t0 = time.perf_counter()
            out = where.compute(None, "grid", [0], [w], [Recipe(1)], kw)
            return out, where.MOVED["last"], time.perf_counter() - t0

        def full() -> tuple[object, int, float]:
            t0 = time.perf_counter()
            out = where.fetch(w)
            return out, where.MOVED["last"], time.perf_counter() - t0

        cases = {name: dict(zip(("max_tokens", "max_channels"),
                                lod.grid_shape(args.tokens, args.hidden, cells), strict=True))
                 for name, cells in BUDGETS.items()}  # fmt: skip
        cases["studio render (400 x 800)"] = {"max_tokens": 400, "max_channels": 800}
        view(cases["studio render (400 x 800)"])  # warm: the node's worker imports torch once
        full()
        whole_s, whole_b = [], 0
        print(f"{'view':<28} {'grid':>10} {'moved B':>10} {'tensor / moved':>15} "
              f"{'view s':>8} {'full download s':>16}")  # fmt: skip
        for name, kw in cases.items():
            times, full_times = [], []
            for _ in range(args.repeats):  # interleaved with the full download
                grid, moved, s = view(kw)
                times.append(s)
                whole, whole_b, s = full()
                full_times.append(s)
            ref = lod.build_grid(t, **kw)
            for f in ("values", "raw", "tokens", "channels", "token_axis", "channel_axis"):
                np.testing.assert_array_equal(getattr(grid, f), getattr(ref, f))
            assert torch.equal(whole, t) and where.MOVED["by"] == "ray"
            whole_s += full_times
            shape = f"{ref.raw.shape[0]} x {ref.raw.shape[1]}"
            print(f"{name:<28} {shape:>10} {moved:>10} {whole_b / moved:>14.1f}x "
                  f"{statistics.median(times):>8.3f} {statistics.median(full_times):>16.3f}",
                  flush=True)  # fmt: skip
        print(f"full download: {whole_b} B (Ray's object size; tensor {t.nbytes} B), median "
              f"{statistics.median(whole_s):.3f} s; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
