"""Run-time detection of the optional hardware stacks, without importing vendor packages."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Stack:
    name: str
    available: bool
    version: str | None
    detail: str = ""


def _dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return None


def _module_stack(name: str, module: str, *dists: str) -> Stack:
    # find_spec only: importing torch_npu without CANN breaks `import torch` (ENVIRONMENT.md).
    present = importlib.util.find_spec(module) is not None
    return Stack(name, present, _dist_version(*dists) if present else None)


def _cuda() -> Stack:
    try:
        import torch
    except ImportError:
        return Stack("CUDA", False, None, "torch not installed")
    if not torch.cuda.is_available():
        return Stack("CUDA", False, torch.version.cuda, "no CUDA device")
    names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
    return Stack(
        "CUDA", True, torch.version.cuda, f"{torch.cuda.device_count()} x {', '.join(names)}"
    )


def _npu() -> Stack:
    version = _dist_version("torch-npu", "torch_npu")
    devices = sorted(p for p in os.listdir("/dev") if p.startswith("davinci") and p[7:].isdigit())
    if version is None:
        return Stack("NPU", False, None, "torch_npu not installed")
    detail = f"{len(devices)} device(s) under /dev" if devices else "no /dev/davinci* device"
    return Stack("NPU", bool(devices), version, detail)


def _cpu() -> Stack:
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    detail = f"{platform.machine()}, {os.cpu_count()} cores"
    return Stack("CPU (torch)", torch_version is not None, torch_version, detail)


@lru_cache(maxsize=1)
def detect() -> tuple[Stack, ...]:
    """Every stack the studio can use, with its version where installed."""
    triton_ascend = _dist_version("triton-ascend", "triton_ascend")
    triton = _module_stack("triton", "triton", "triton")
    if triton_ascend:
        triton = Stack("triton", True, triton_ascend, "triton-ascend")
    return (
        _cpu(),
        _cuda(),
        _npu(),
        triton,
        _module_stack("msit_llm", "msit_llm", "msit", "msit_llm"),
        _module_stack("msprobe", "msprobe", "mindstudio-probe"),
        _module_stack("vllm", "vllm", "vllm"),
        _module_stack("vllm-ascend", "vllm_ascend", "vllm-ascend", "vllm_ascend"),
        _module_stack("sglang", "sglang", "sglang"),
    )


def as_dicts() -> list[dict[str, object]]:
    return [asdict(s) for s in detect()]
