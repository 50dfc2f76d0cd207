"""Device selection, timers (CUDA graph, CUDA events, wall clock) and the copy-bandwidth probe."""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from studio_backend.bench.presets import DEVICES
from studio_backend.errors import InputError


def npu_available() -> bool:
    # find_spec first: importing torch_npu without CANN breaks torch (ENVIRONMENT.md).
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        import torch_npu  # noqa: F401

        return bool(torch.npu.is_available())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any failure means "no usable NPU"
        return False


def resolve_device(name: str) -> str:
    """'auto' -> cuda, else npu, else cpu; an explicit device must be present."""
    if name not in DEVICES:
        raise InputError(f"--device {name}", f"choose one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "npu" if npu_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda", "no CUDA device is available here")
    if name == "npu" and not npu_available():
        raise InputError("--device npu", "torch_npu with an Ascend device is not available")
    return name


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    if device == "npu":
        return str(torch.npu.get_device_name(0))  # type: ignore[attr-defined]
    import platform

    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "npu":
        torch.npu.synchronize()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Timing:
    samples_us: list[float]  # per call (one sample times all rotated calls, divided by their count)
    mode: str  # 'cuda-graph' | 'cuda-events' | 'wall-clock'

    @property
    def median(self) -> float:
        return statistics.median(self.samples_us)

    def quantile(self, q: float) -> float:
        xs = sorted(self.samples_us)
        if len(xs) == 1:
            return xs[0]
        pos = q * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _time_cuda(
    calls: Sequence[Callable[[], object]], reps: int, warmup: int, graph: bool
) -> Timing:
    run: Callable[[], object]
    mode = "cuda-events"

    def eager() -> None:
        for c in calls:
            c()

    run = eager
    if graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                eager()  # warm up (compiles Triton kernels) outside the capture
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                eager()
            run, mode = g.replay, "cuda-graph"
        except Exception:  # noqa: BLE001 - host syncs make a path uncapturable: time it eagerly
            torch.cuda.synchronize()
            run, mode = eager, "cuda-events"
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    samples = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1000.0 / len(calls))
    return Timing(samples, mode)


def time_calls(
    calls: Sequence[Callable[[], object]],
    device: str,
    *,
    reps: int = 30,
    warmup: int = 3,
    graph: bool = True,
) -> Timing:
    """Per-call latency samples (us) of running ``calls`` in turn (cold-cache rotation)."""
    if device == "cuda":
        return _time_cuda(calls, reps, warmup, graph)
    for _ in range(warmup):
        for c in calls:
            c()
    synchronize(device)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for c in calls:
            c()
        synchronize(device)
        samples.append((time.perf_counter() - t0) * 1e6 / len(calls))
    return Timing(samples, "wall-clock")


def copy_bandwidth_gbps(device: str, nbytes: int, reps: int = 10) -> float:
    """Achieved device-memory copy bandwidth (read + write counted), GB/s, median of reps."""
    n = nbytes // 4
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    timing = time_calls([lambda: dst.copy_(src)], device, reps=reps, warmup=2, graph=False)
    return 2 * n * 4 / (timing.median * 1e-6) / 1e9
