"""Byte and FLOP accounting (REFERENCE.md section 7) and its agreement with seed 002's table."""

from __future__ import annotations

import pytest

from studio_backend.bench.metrics import (
    expert_bytes,
    layer_flops,
    min_layer_bytes,
    reference_layer_bytes,
)
from studio_backend.bench.published import SEED_002_KERNEL


def test_expert_bytes_formula() -> None:
    # 3*H*I*(4/8 + 2/128 + 0.5/128) for Qwen3-30B-A3B
    assert expert_bytes(2048, 768, 128) == 3 * 2048 * 768 * (0.5 + 2 / 128 + 0.5 / 128)
    assert expert_bytes(2048, 768, 128) == 2_451_456
    assert min_layer_bytes(2, 8, 2048, 768, 128, 16) == 16 * 2_451_456 + 2 * 2048 * 4 + 8 * 2 * 8


def test_reference_moves_about_8_7x() -> None:
    ratio = reference_layer_bytes(1, 8, 2048, 768, 128, 8) / min_layer_bytes(
        1, 8, 2048, 768, 128, 8
    )
    assert ratio == pytest.approx(8.7, abs=0.05)


def test_seed_002_bandwidths_follow_the_formula() -> None:
    # Seed 002's GB/s x latency equals E_t = 8*B experts with fp16 zero points, within 0.1 %.
    for row in SEED_002_KERNEL:
        b = row["batch"]
        expected = min_layer_bytes(b, 8, 2048, 768, 128, 8 * b, zero_bytes=2.0)
        for lat, bw in (("ref_us", "ref_gbps"), ("custom_us", "custom_gbps")):
            assert row[lat] * 1e-6 * row[bw] * 1e9 == pytest.approx(expected, rel=1e-3)


def test_flops() -> None:
    assert layer_flops(1, 8, 2048, 768) == 2 * 8 * 3 * 2048 * 768
