"""``studio bench kernels``: the W4A16 MoE layer, reference vs fused, measured rigorously.

Per batch size: a correctness gate against the fp64 oracle first (a path that fails it is not
timed), then timing with cold-cache rotation (several routings and inputs in turn, so that the
weights of one call are not in L2 for the next), CUDA graphs where the path allows it, median
and p20/p80, distinct experts touched, minimum bytes, achieved GB/s, % of the copy bandwidth
measured in the same run, TFLOP/s and the speedup over the reference.

On a machine without a GPU the Triton kernel would only run in the interpreter, which is not a
kernel timing: the CPU run times the reference and the fused algorithm in torch instead, and
labels both with the device.
"""

from __future__ import annotations

import datetime as dt
import math
import platform
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from studio_backend.bench import metrics
from studio_backend.bench.presets import Preset, datasheet_gbps, get_preset
from studio_backend.bench.timing import (
    Timing,
    copy_bandwidth_gbps,
    device_name,
    resolve_device,
    time_calls,
)
from studio_backend.errors import InputError, StudioError
from studio_kernels.experts import AwqExperts, FusedExperts, fuse_experts, random_experts
from studio_kernels.oracle import moe_oracle, relative_error
from studio_kernels.routing import ROUTINGS, make_routing

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Max normwise relative error against the fp64 oracle before a path may be timed.
GATES = {"bfloat16": 1e-2, "float16": 2e-3, "float32": 1e-4}
GATE_TOKENS = 4  # the oracle checks the first tokens of each batch (its cost grows with E_t)


@dataclass
class KernelBenchConfig:
    preset: str = "tiny"
    batches: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 8, 16, 32])
    group_size: int | None = None
    routing: str = "uniform"
    device: str = "auto"
    dtype: str = "bfloat16"
    reps: int = 30
    warmup: int = 3
    rotations: int | None = None  # None: enough to exceed 4x the cache size
    seed: int = 0
    name: str | None = None


@dataclass
class Impl:
    name: str
    label: str
    fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    baseline: bool = False
    graphable: bool = False  # free of host syncs, so a CUDA graph can capture it


def impls_for(device: str, awq: AwqExperts, fused: FusedExperts) -> list[Impl]:
    """The reference and the fused path for this device."""
    from studio_kernels.reference import moe_reference, moe_tiled_torch

    ref = Impl(
        "reference",
        f"dequantize to memory + matmul (torch, {device})",
        lambda x, i, w: moe_reference(x, i, w, awq),
        baseline=True,
    )
    if device == "cpu":
        fused_impl = Impl(
            "fused-torch-cpu",
            "fused algorithm in torch (tiled dequant, CPU; not the Triton kernel)",
            lambda x, i, w: moe_tiled_torch(x, i, w, fused),
        )
    else:
        from studio_kernels.triton_moe import moe_fused_triton

        fused_impl = Impl(
            "fused-triton",
            f"fused W4A16 Triton kernel ({device})",
            lambda x, i, w: moe_fused_triton(x, i, w, fused, validate=False),
            graphable=True,
        )
    return [ref, fused_impl]


def versions(device: str) -> dict[str, str | None]:
    """Software versions recorded with every run."""
    import importlib.metadata as md

    def dist(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": dist("triton") or dist("triton-ascend"),
        "cuda": torch.version.cuda if device == "cuda" else None,
        "torch_npu": dist("torch-npu") if device == "npu" else None,
        "studio": dist("inspection-studio"),
        "platform": platform.platform(),
    }


def _cache_bytes(device: str) -> int:
    if device == "cuda":
        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20))
    return 32 << 20  # typical last-level cache of a CPU or NPU L2: a conservative guess


def _rotations(cfg: KernelBenchConfig, device: str, call_bytes: float) -> int:
    if cfg.rotations is not None:
        if cfg.rotations < 1:
            raise InputError(f"--rotations {cfg.rotations}", "must be at least 1")
        return cfg.rotations
    cap = 32 if device != "cpu" else 4
    return max(1, min(cap, math.ceil(4 * _cache_bytes(device) / max(call_bytes, 1.0))))


def run_kernel_bench(
    cfg: KernelBenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the sweep; returns ``{"run": {...}, "kernel_results": [rows]}`` (JSON-ready)."""
    say = progress or (lambda _msg: None)
    if cfg.routing not in ROUTINGS:
        raise InputError(f"--routing {cfg.routing}", f"choose one of {', '.join(ROUTINGS)}")
    if cfg.dtype not in DTYPES:
        raise InputError(f"--dtype {cfg.dtype}", f"choose one of {', '.join(DTYPES)}")
    if not cfg.batches or min(cfg.batches) < 1:
        raise InputError(f"--batch {cfg.batches}", "batch sizes must be positive integers")
    preset: Preset = get_preset(cfg.preset, cfg.group_size)
    device = resolve_device(cfg.device)
    if device != "cpu":
        return _run(cfg, preset, device, say)
    # One intra-op thread on CPU: the tiny shapes gain nothing from more, and on a shared
    # machine oversubscribed spinning threads turn timings into noise.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(cfg, preset, device, say)
    finally:
        torch.set_num_threads(threads)


def _run(
    cfg: KernelBenchConfig, preset: Preset, device: str, say: Callable[[str], None]
) -> dict[str, Any]:
    dtype = DTYPES[cfg.dtype]
    act_bytes = metrics.DTYPE_BYTES[cfg.dtype]

    say(f"device {device} ({device_name(device)}); building {preset.name} experts")
    awq = random_experts(
        preset.num_experts, preset.hidden, preset.intermediate, preset.group_size,
        seed=cfg.seed, device=device,
    )  # fmt: skip
    fused = fuse_experts(awq)
    impls = impls_for(device, awq, fused)
    copy_bytes = (1 << 30) if device != "cpu" else (128 << 20)
    copy_gbps = copy_bandwidth_gbps(device, copy_bytes)
    say(f"measured copy bandwidth {copy_gbps:.1f} GB/s")

    rows: list[dict[str, Any]] = []
    for batch in cfg.batches:
        w_e = metrics.expert_bytes(preset.hidden, preset.intermediate, preset.group_size)
        guess = min(preset.num_experts, batch * preset.topk) * w_e
        n_rot = _rotations(cfg, device, guess)
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + batch)
        inputs = []
        for r in range(n_rot):
            ids, wts = make_routing(
                batch, preset.topk, preset.num_experts, cfg.routing,
                seed=cfg.seed * 100_003 + batch * 1009 + r,
            )  # fmt: skip
            x = torch.randn((batch, preset.hidden), generator=gen).to(dtype)
            inputs.append((x.to(device), ids.to(device), wts.to(device)))
        touched = [len(set(ids.flatten().tolist())) for _, ids, _ in inputs]
        e_t = sum(touched) / len(touched)
        min_bytes = sum(
            metrics.min_layer_bytes(
                batch, preset.topk, preset.hidden, preset.intermediate, preset.group_size, t,
                act_bytes,
            )
            for t in touched
        ) / len(touched)  # fmt: skip
        flops = metrics.layer_flops(batch, preset.topk, preset.hidden, preset.intermediate)

        # Correctness gate on the first rotation's first tokens, before any timing.
        x0, ids0, w0 = inputs[0]
        n_gate = min(batch, GATE_TOKENS)
        oracle = moe_oracle(x0[:n_gate], ids0[:n_gate], w0[:n_gate], awq)
        errors = {}
        for impl in impls:
            err = relative_error(impl.fn(x0, ids0, w0)[:n_gate], oracle)
            errors[impl.name] = err
            if not err < GATES[cfg.dtype]:
                raise StudioError(
                    f"correctness gate failed for {impl.name} at batch {batch}: relative error "
                    f"{err:.3g} >= {GATES[cfg.dtype]:g} ({cfg.dtype}); nothing was timed"
                )
        timings: dict[str, Timing] = {}
        for impl in impls:
            calls = [lambda x=x, i=i, w=w, f=impl.fn: f(x, i, w) for x, i, w in inputs]
            timings[impl.name] = time_calls(
                calls, device, reps=cfg.reps, warmup=cfg.warmup, graph=impl.graphable
            )
        base = next(t for i, t in timings.items() if i == impls[0].name).median
        for impl in impls:
            t = timings[impl.name]
            med = t.median
            gbps = min_bytes / (med * 1e-6) / 1e9
            rows.append(
                {
                    "preset": preset.name,
                    "hidden": preset.hidden,
                    "intermediate": preset.intermediate,
                    "num_experts": preset.num_experts,
                    "topk": preset.topk,
                    "group_size": preset.group_size,
                    "dtype": cfg.dtype,
                    "routing": cfg.routing,
                    "batch": batch,
                    "impl": impl.name,
                    "impl_label": impl.label,
                    "timing": t.mode,
                    "rotations": n_rot,
                    "reps": len(t.samples_us),
                    "median_us": med,
                    "p20_us": t.quantile(0.2),
                    "p80_us": t.quantile(0.8),
                    "experts_touched": e_t,
                    "min_bytes": min_bytes,
                    "gbps": gbps,
                    "pct_copy": 100.0 * gbps / copy_gbps,
                    "tflops": flops / (med * 1e-6) / 1e12,
                    "speedup": base / med,
                    "max_rel_err": errors[impl.name],
                }
            )
        say(
            f"batch {batch}: E_t {e_t:.1f}, "
            + ", ".join(f"{n} {timings[n].median:.1f} us" for n in timings)
            + f", speedup {base / timings[impls[-1].name].median:.2f}x"
        )
    name_dev = device_name(device)
    run = {
        "run_id": uuid.uuid4().hex[:12],
        "kind": "kernels",
        "name": cfg.name or f"{preset.name} {cfg.routing} {cfg.dtype} on {device}",
        "device": device,
        "device_name": name_dev,
        "versions": versions(device),
        "config": {
            "preset": preset.as_dict(),
            "batches": cfg.batches,
            "routing": cfg.routing,
            "dtype": cfg.dtype,
            "reps": cfg.reps,
            "warmup": cfg.warmup,
            "seed": cfg.seed,
            "impls": {i.name: i.label for i in impls},
            "gate": {"tokens": GATE_TOKENS, "max_rel_err": GATES[cfg.dtype]},
        },
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": "measured",
        "copy_gbps": copy_gbps,
        "datasheet_gbps": datasheet_gbps(name_dev),
        "notes": "",
    }
    return {"run": run, "kernel_results": rows, "serve_results": []}
