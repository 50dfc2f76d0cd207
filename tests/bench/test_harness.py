"""The kernel harness end to end on CPU with the tiny preset, and its correctness gate."""

from __future__ import annotations

import pytest

from studio_backend.bench import harness
from studio_backend.bench.harness import KernelBenchConfig, run_kernel_bench
from studio_backend.bench.metrics import layer_flops, min_layer_bytes
from studio_backend.errors import InputError, StudioError


@pytest.fixture(scope="module")
def tiny_run():
    cfg = KernelBenchConfig(
        preset="tiny", batches=[1, 4], routing="disjoint", device="cpu", reps=3, rotations=2
    )
    return run_kernel_bench(cfg)


def test_rows_are_consistent(tiny_run) -> None:
    run, rows = tiny_run["run"], tiny_run["kernel_results"]
    assert run["device"] == "cpu" and run["kind"] == "kernels" and run["copy_gbps"] > 0
    assert run["versions"]["torch"] and run["created_at"].endswith("+00:00")
    assert [(r["batch"], r["impl"]) for r in rows] == [
        (1, "reference"), (1, "fused-torch-cpu"), (4, "reference"), (4, "fused-torch-cpu"),
    ]  # fmt: skip
    by = {(r["batch"], r["impl"]): r for r in rows}
    for r in rows:
        b = r["batch"]
        # disjoint routing of tiny (E=16, K=4): E_t = min(16, 4B)
        assert r["experts_touched"] == min(16, 4 * b)
        assert r["min_bytes"] == min_layer_bytes(b, 4, 256, 128, 64, min(16, 4 * b), 2)
        assert r["gbps"] == pytest.approx(r["min_bytes"] / r["median_us"] / 1e3)
        assert r["pct_copy"] == pytest.approx(100 * r["gbps"] / run["copy_gbps"])
        assert r["tflops"] == pytest.approx(layer_flops(b, 4, 256, 128) / r["median_us"] / 1e6)
        assert r["p20_us"] <= r["median_us"] <= r["p80_us"]
        assert r["timing"] == "wall-clock" and r["rotations"] == 2 and r["reps"] == 3
        assert r["max_rel_err"] < 1e-2
        ref = by[(b, "reference")]["median_us"]
        assert r["speedup"] == pytest.approx(ref / r["median_us"])
    assert "not the Triton kernel" in by[(1, "fused-torch-cpu")]["impl_label"]


def test_gate_refuses_wrong_path_before_timing(monkeypatch) -> None:
    real = harness.impls_for

    def broken(device, awq, fused):
        impls = real(device, awq, fused)
        good = impls[1].fn
        impls[1].fn = lambda x, i, w: good(x, i, w) * 1.05  # 5 % off
        return impls

    def no_timing(*args, **kwargs):
        raise AssertionError("timed a path that failed the gate")

    monkeypatch.setattr(harness, "impls_for", broken)
    monkeypatch.setattr(harness, "time_calls", no_timing)
    with pytest.raises(StudioError, match="correctness gate failed for fused-torch-cpu"):
        run_kernel_bench(KernelBenchConfig(preset="tiny", batches=[2], device="cpu", reps=1))


def test_bad_inputs() -> None:
    with pytest.raises(InputError, match="unknown preset"):
        run_kernel_bench(KernelBenchConfig(preset="nope"))
    with pytest.raises(InputError, match="must divide"):
        run_kernel_bench(KernelBenchConfig(preset="tiny", group_size=96, device="cpu"))
    with pytest.raises(InputError, match="no CUDA device"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        run_kernel_bench(KernelBenchConfig(preset="tiny", device="cuda"))
