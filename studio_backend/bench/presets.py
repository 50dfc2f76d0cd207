"""MoE layer shapes to benchmark and the datasheet memory bandwidth of known accelerators."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from studio_backend.errors import InputError

DEVICES = ("auto", "cuda", "npu", "cpu")  # where kernels run (studio_backend.bench.timing)


@dataclass(frozen=True)
class Preset:
    """One MoE layer's routed experts (shared experts excluded)."""

    name: str
    hidden: int
    intermediate: int
    num_experts: int
    topk: int
    group_size: int
    description: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("qwen3-30b-a3b", 2048, 768, 128, 8, 128, "Qwen3-30B-A3B: 128 experts, top-8"),
        Preset("deepseek-v3", 7168, 2048, 256, 8, 128, "DeepSeek-V3 routed experts, top-8"),
        Preset("deepseek-v3-tp8", 7168, 256, 256, 8, 128, "DeepSeek-V3 under TP8 (I/8 per rank)"),
        Preset("tiny", 256, 128, 16, 4, 64, "CI shape: runs anywhere, on CPU in seconds"),
    )
}

# Peak HBM bandwidth from vendor datasheets, GB/s (1e9 bytes/s), matched on the device name.
DATASHEET_GBPS: tuple[tuple[str, float], ...] = (
    ("H200", 4800.0),
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # SXM5
    ("H800", 3350.0),
    ("A100-SXM4-80GB", 2039.0),
    ("A100", 1555.0),
    ("L40S", 864.0),
    ("Ascend910B", 1600.0),  # as commonly quoted (REFERENCE.md section 7)
    ("910B", 1600.0),
)


def get_preset(name: str, group_size: int | None = None) -> Preset:
    """A preset by name, optionally with another quantization group size."""
    if name not in PRESETS:
        raise InputError(name, f"unknown preset; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    if group_size is None or group_size == p.group_size:
        return p
    for what, dim in (("hidden", p.hidden), ("intermediate", p.intermediate)):
        if group_size <= 0 or dim % group_size:
            raise InputError(f"--group {group_size}", f"must divide {what}={dim} of {name}")
    return Preset(
        p.name, p.hidden, p.intermediate, p.num_experts, p.topk, group_size, p.description
    )


def datasheet_gbps(device_name: str) -> float | None:
    """Datasheet HBM bandwidth for a device name, or None when unknown (CPUs included)."""
    for key, gbps in DATASHEET_GBPS:
        if key.lower() in device_name.lower():
            return gbps
    return None
