"""Figure builders: series, ordering, reference lines and the published series' labelling."""

from __future__ import annotations

import pandas as pd

from studio_backend.bench.published import published_kernel_rows, published_serve_rows
from studio_ui.figures import kernels as figs


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


def _serve(run: str, device: str, tps: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"run_name": run, "device_name": device, "source": "measured",
                         "batch": [1, 2, 4][: len(tps)], "tokens_per_s": tps})  # fmt: skip


def test_throughput_measured_and_published_on_separate_axes() -> None:
    measured = pd.concat([_serve("cpu tiny", "cpu", [10.0, 18.0, 30.0]),
                          _serve("h100 tiny", "NVIDIA H100", [500.0, 900.0])])  # fmt: skip
    fig = figs.throughput_chart(pd.concat([measured, pd.DataFrame(published_serve_rows())]))
    # two panels, each with its own x and y axes: the published 910B series never share one
    assert [(t.name, t.xaxis, t.yaxis) for t in fig.data] == [
        ("cpu tiny", "x", "y"), ("h100 tiny", "x", "y"),
        ("Ascend 910B (seed 002), SGLang native (published)", "x2", "y2"),
        ("Ascend 910B (seed 002), SGLang optimised (published)", "x2", "y2"),
    ]  # fmt: skip
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]
    assert [a.text for a in fig.layout.annotations] == [
        "Measured<br><sup>NVIDIA H100 / cpu</sup>",  # both devices named
        "Published<br><sup>Ascend 910B · Qwen3-30B-A3B AWQ, SGLang (seed 002)</sup>",
    ]
    assert list(fig.layout.xaxis.categoryarray) == ["1", "2", "4"]
    assert list(fig.layout.xaxis2.categoryarray) == ["1", "2", "4", "6", "8"]
    assert list(fig.data[1].y) == [500.0, 900.0]
    only = figs.throughput_chart(measured)  # no published rows: one panel
    assert {t.xaxis for t in only.data} == {"x"} and len(only.layout.annotations) == 1


def test_heatmap_keeps_runs_apart_and_names_devices() -> None:
    cpu = _measured().assign(run_name="cpu", device_name="cpu", pct_copy=1.0)
    both = pd.concat([_measured(), cpu])
    hm = figs.pct_copy_heatmap(both)
    assert list(hm.data[0].y) == [
        "cpu · qwen3-30b-a3b · uniform · fused-triton",
        "cpu · qwen3-30b-a3b · uniform · reference",
        "h100 · qwen3-30b-a3b · uniform · fused-triton",
        "h100 · qwen3-30b-a3b · uniform · reference",
    ]
    assert hm.data[0].z[0][0] == 1.0 and hm.data[0].z[2][0] == 2e6 / 100 / 3000
    assert hm.layout.title.text == "% of measured copy bandwidth<br><sup>NVIDIA H100 / cpu</sup>"
    lat = figs.latency_bars(both, where=figs.devices(both) + " · qwen3-30b-a3b")
    assert lat.layout.title.text.endswith("<br><sup>NVIDIA H100 / cpu · qwen3-30b-a3b</sup>")
