"""Published figures of seed 002 (MoE-Ascend-Opt): Huawei Ascend 910B, Qwen3-30B-A3B AWQ.

Shown as a labelled reference series only: the studio did not measure them.
"""

from __future__ import annotations

SOURCE = "seed 002 (MoE-Ascend-Opt README), Ascend 910B, Qwen3-30B-A3B-Thinking-2507-AWQ"
DEVICE = "Ascend 910B (seed 002)"
DATASHEET_GBPS = 1600.0  # 910B HBM as commonly quoted

# Kernel micro-benchmark of the fused MoE layer: native (ref) vs the project's kernel (custom).
SEED_002_KERNEL: tuple[dict[str, float], ...] = (
    {"batch": 1, "ref_us": 207.61, "custom_us": 52.99, "ref_gbps": 96.59, "custom_gbps": 378.45, "speedup": 3.92},
    {"batch": 2, "ref_us": 279.09, "custom_us": 72.59, "ref_gbps": 143.71, "custom_gbps": 552.53, "speedup": 3.84},
    {"batch": 3, "ref_us": 408.59, "custom_us": 93.67, "ref_gbps": 147.24, "custom_gbps": 642.30, "speedup": 4.36},
    {"batch": 4, "ref_us": 519.75, "custom_us": 117.09, "ref_gbps": 154.34, "custom_gbps": 685.05, "speedup": 4.44},
)  # fmt: skip

# SGLang end-to-end decode throughput, input 1 token, output 1024 tokens.
SEED_002_SERVE: tuple[dict[str, float], ...] = (
    {"batch": 1, "native_tps": 52.99, "optimised_tps": 91.92, "speedup": 1.73},
    {"batch": 2, "native_tps": 83.86, "optimised_tps": 163.43, "speedup": 1.95},
    {"batch": 4, "native_tps": 127.58, "optimised_tps": 272.99, "speedup": 2.14},
    {"batch": 6, "native_tps": 155.48, "optimised_tps": 340.32, "speedup": 2.19},
    {"batch": 8, "native_tps": 181.69, "optimised_tps": 403.48, "speedup": 2.22},
)  # fmt: skip


def published_kernel_rows() -> list[dict[str, object]]:
    """Seed 002's kernel table as result rows (impl 'reference' / 'fused'), source 'published'."""
    rows: list[dict[str, object]] = []
    for r in SEED_002_KERNEL:
        for impl, lat, bw, speed in (
            ("reference", r["ref_us"], r["ref_gbps"], 1.0),
            ("fused", r["custom_us"], r["custom_gbps"], r["speedup"]),
        ):
            rows.append(
                {
                    "run_name": DEVICE, "run_id": "seed-002", "source": "published",
                    "device_name": DEVICE, "preset": "qwen3-30b-a3b", "routing": "published",
                    "batch": int(r["batch"]), "impl": impl, "median_us": lat,
                    "p20_us": None, "p80_us": None, "gbps": bw,
                    "pct_copy": None, "speedup": speed, "copy_gbps": None,
                    "datasheet_gbps": DATASHEET_GBPS,
                }
            )  # fmt: skip
    return rows


def published_serve_rows() -> list[dict[str, object]]:
    """Seed 002's SGLang throughput table as rows, one series per implementation."""
    rows: list[dict[str, object]] = []
    for r in SEED_002_SERVE:
        for series, tps in (("native", r["native_tps"]), ("optimised", r["optimised_tps"])):
            rows.append(
                {
                    "run_name": f"{DEVICE}, SGLang {series}", "source": "published",
                    "batch": int(r["batch"]), "tokens_per_s": tps,
                }
            )  # fmt: skip
    return rows
