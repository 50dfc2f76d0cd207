"""AWQ packing: exact round trips against a bit-by-bit oracle written from REFERENCE.md 7."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio_kernels.awq import (
    AWQ_ORDER,
    dequantize_awq,
    dequantize_fused,
    pack_awq,
    pack_k,
    quantize_awq,
    repack_awq,
    unpack_awq,
    unpack_k,
)


def _oracle_pack(vals: np.ndarray) -> np.ndarray:
    """Nibble i of word j holds column 8*j + AWQ_ORDER[i] (REFERENCE.md 7), one bit at a time."""
    rows, cols = vals.shape
    out = np.zeros((rows, cols // 8), dtype=np.uint32)
    for j in range(cols // 8):
        for i, c in enumerate(AWQ_ORDER):
            out[:, j] |= vals[:, 8 * j + c].astype(np.uint32) << np.uint32(4 * i)
    return out.view(np.int32)


def test_pack_matches_oracle_and_round_trips() -> None:
    gen = torch.Generator().manual_seed(0)
    vals = torch.randint(0, 16, (64, 48), generator=gen, dtype=torch.int32)
    packed = pack_awq(vals)
    assert packed.dtype == torch.int32
    assert np.array_equal(packed.numpy(), _oracle_pack(vals.numpy()))
    assert torch.equal(unpack_awq(packed), vals)


def test_sign_bit_needs_masking() -> None:
    # Column 7 lives in the top nibble: 15 there makes the word negative.
    vals = torch.zeros((1, 8), dtype=torch.int32)
    vals[0, 7] = 15
    vals[0, 0] = 3
    word = pack_awq(vals)
    assert int(word[0, 0]) == (3 | (15 << 28)) - (1 << 32)
    assert unpack_awq(word).tolist() == [[3, 0, 0, 0, 0, 0, 0, 15]]


def test_dequantize_exact() -> None:
    gen = torch.Generator().manual_seed(1)
    k, n, g = 256, 64, 128
    q = torch.randint(0, 16, (k, n), generator=gen, dtype=torch.int32)
    z = torch.randint(0, 16, (k // g, n), generator=gen, dtype=torch.int32)
    s = (torch.rand((k // g, n), generator=gen) * 0.02 + 0.001).half()
    w = dequantize_awq(pack_awq(q), pack_awq(z), s, g)
    expected = (q.numpy() - np.repeat(z.numpy(), g, 0)) * np.repeat(s.float().numpy(), g, 0)
    assert w.dtype == torch.float16
    assert np.array_equal(w.numpy(), expected.astype(np.float16))


def test_quantize_error_bounded_by_one_step() -> None:
    # Rounding the zero point can push an extreme value one step past the grid: bound is s.
    gen = torch.Generator().manual_seed(2)
    w = torch.randn((256, 32), generator=gen) * 0.05
    qw, qz, s = quantize_awq(w, 128)
    back = dequantize_awq(qw, qz, s, 128).float()
    step = s.float().repeat_interleave(128, 0)
    err = (back - w).abs()
    assert bool((err <= step * 1.001 + 1e-7).all())
    assert float((err <= step * 0.501).float().mean()) > 0.99


def test_repack_layout_round_trip() -> None:
    gen = torch.Generator().manual_seed(3)
    k, n, g = 256, 64, 64
    w = torch.randn((k, n), generator=gen)
    qw, qz, s = quantize_awq(w, g)
    lay = repack_awq(qw, qz, s)
    assert lay.qweight.shape == (n, k // 8) and lay.zeros.shape == (n, k // g)
    assert torch.equal(unpack_k(lay.qweight), unpack_awq(qw).t())
    assert torch.equal(pack_k(unpack_k(lay.qweight)), lay.qweight)
    assert torch.equal(dequantize_fused(lay, g), dequantize_awq(qw, qz, s, g))


@pytest.mark.parametrize(("k", "n"), [(256, 64), (96, 40)])
def test_repack_triton_equals_torch(k: int, n: int) -> None:
    pytest.importorskip("triton")
    from studio_kernels.repack import repack_awq_triton

    gen = torch.Generator().manual_seed(4)
    qw, qz, s = quantize_awq(torch.randn((k, n), generator=gen), 32)
    a, b = repack_awq(qw, qz, s), repack_awq_triton(qw, qz, s)
    assert torch.equal(a.qweight, b.qweight)
    assert torch.equal(a.zeros, b.zeros) and torch.equal(a.scales, b.scales)
