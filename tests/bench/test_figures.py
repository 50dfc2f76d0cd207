"""Figure builders: series, ordering, reference lines and the published series' labelling."""

from __future__ import annotations

import pandas as pd

from backend.bench.published import published_kernel_rows, published_serve_rows
from studio.figures import kernels as figs


def _measured() -> pd.DataFrame:
    rows = []
    for b in (1, 2, 4, 8):
        for impl, t in (("reference", 400.0 * b), ("fused-triton", 100.0 * b)):
            rows.append({"run_name": "h100", "source": "measured", "device_name": "NVIDIA H100",
                         "preset": "qwen3-30b-a3b", "routing": "uniform", "batch": b, "impl": impl,
                         "median_us": t, "p20_us": t * 0.9, "p80_us": t * 1.2, "gbps": 2e4 / t,
                         "pct_copy": 2e6 / t / 3000, "speedup": 400.0 * b / t,
                         "copy_gbps": 3000.0, "datasheet_gbps": 3350.0})  # fmt: skip
    return pd.DataFrame(rows)


def test_latency_bars_with_published_series() -> None:
    df = pd.concat([_measured(), pd.DataFrame(published_kernel_rows())])
    fig = figs.latency_bars(df)
    names = [t.name for t in fig.data]
    assert names == [
        "h100 / reference", "h100 / fused-triton",
        "Ascend 910B (seed 002) / reference (published)", "Ascend 910B (seed 002) / fused (published)",
    ]  # fmt: skip
    # batch 3 (published only) sorts between 2 and 4
    assert list(fig.layout.xaxis.categoryarray) == ["1", "2", "3", "4", "8"]
    fused = fig.data[1]
    assert list(fused.y) == [100.0, 200.0, 400.0, 800.0]
    assert list(fused.error_y.array) == [20.0, 40.0, 80.0, 160.0]
    assert fig.data[3].marker.pattern.shape == "/"  # published bars hatched


def test_speedup_and_bandwidth_lines() -> None:
    df = pd.concat([_measured(), pd.DataFrame(published_kernel_rows())])
    sp = figs.speedup_line(df)
    assert [t.name for t in sp.data] == [
        "h100 / fused-triton",
        "Ascend 910B (seed 002) / fused (published)",
    ]
    assert list(sp.data[1].y) == [3.92, 3.84, 4.36, 4.44]
    bw = figs.bandwidth_chart(df)
    hlines = sorted(s.y0 for s in bw.layout.shapes)
    assert hlines == [1600.0, 3000.0, 3350.0]  # 910B datasheet, measured copy, H100 datasheet


def test_heatmap_and_throughput() -> None:
    hm = figs.pct_copy_heatmap(_measured())
    assert list(hm.data[0].y) == [
        "qwen3-30b-a3b · uniform · fused-triton",
        "qwen3-30b-a3b · uniform · reference",
    ]
    assert hm.data[0].z[0][0] == 2e6 / 100 / 3000
    tp = figs.throughput_chart(pd.DataFrame(published_serve_rows()))
    assert [t.line.dash for t in tp.data] == ["dot", "dash"]
    assert list(tp.data[1].y) == [91.92, 163.43, 272.99, 340.32, 403.48]
