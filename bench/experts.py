"""Expert-load aggregation: heatmap + balance metrics over 61 layers x 256 experts x 2000 steps.

Studio path: one DuckDB GROUP BY over a packed (layer, slot) key of the stored counts, then
device/expert from the slot table and the per-layer metrics in numpy on the 61 x 256 result
(studio_backend.moe.store.aggregate).
Baseline: fetch every count row into pandas and aggregate there (what a notebook would do).
Both run in the same process on the same synthetic, seeded table; interleaved, median of N.

    python bench/experts.py [--steps 2000] [--layers 61] [--experts 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio_backend.moe import metrics, store  # noqa: E402
from studio_backend.workspace import open_workspace  # noqa: E402


def baseline(ws, name: str, experts: int, devices: int, top_k: int):
    df = ws.cursor().execute("SELECT * FROM moe_counts WHERE source = ?", [name]).df()
    el = df.groupby(["layer", "expert"])["count"].sum().unstack(fill_value=0)
    dl = df.groupby(["layer", "device"])["count"].sum().unstack(fill_value=0)
    return metrics.layer_metrics(el.to_numpy(), dl.to_numpy(), top_k), el.to_numpy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=61)
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = open_workspace(Path(tmp) / "ws")
        per = args.experts // args.devices
        t0 = time.perf_counter()
        with ws.transaction() as tx:
            tx.execute(
                "INSERT INTO moe_sources (source, kind, num_experts, num_devices, top_k) "
                "VALUES ('bench', 'synthetic', ?, ?, 8)",
                [args.experts, args.devices],
            )
            # seeded synthetic load: hash-derived counts, skewed toward low expert ids
            tx.execute(
                """INSERT INTO moe_counts
                SELECT 'bench', s, -1, l, e, e // ?, e,
                       (hash(s * 1000003 + l * 1009 + e) % (1 + (512 - 2 * e) // 8))::BIGINT
                FROM range(?) t(s), range(?) u(l), range(?) v(e)""",
                [per, args.steps, args.layers, args.experts],
            )
            tx.execute(
                "INSERT INTO moe_slots SELECT 'bench', l, e, e // ?, e FROM range(?) u(l), range(?) v(e)",
                [per, args.layers, args.experts],
            )
        n = ws.cursor().execute("SELECT count(*) FROM moe_counts").fetchone()[0]
        print(f"rows: {n:,} (built in {time.perf_counter() - t0:.1f} s)")
        fast, slow = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            agg = store.aggregate(ws, "bench")
            fast.append(time.perf_counter() - t)
            t = time.perf_counter()
            table, el = baseline(ws, "bench", args.experts, args.devices, 8)
            slow.append(time.perf_counter() - t)
        # correctness gate: both paths give the same heatmap and metrics
        np.testing.assert_array_equal(agg.expert_load, el)
        np.testing.assert_allclose(
            agg.table["balancedness"].to_numpy(), table["balancedness"].to_numpy()
        )
        f, s = statistics.median(fast), statistics.median(slow)
        print(f"studio (DuckDB GROUP BY + numpy metrics): median {f:.3f} s  runs {fast}")
        print(f"baseline (fetch all rows + pandas groupby): median {s:.3f} s  runs {slow}")
        print(f"speed-up: {s / f:.1f}x   target < 1 s: {'met' if f < 1 else 'MISSED'}")
        ws.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
