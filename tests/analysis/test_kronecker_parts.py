"""Kronecker transform equals the explicit Kronecker-product matrix; fused parts split by config."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio_backend.analysis import kronecker
from studio_backend.analysis.parts import part_sizes, parts_of, split
from studio_backend.errors import InputError


def _hadamard(n: int) -> np.ndarray:
    h = np.array([[1.0]])
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


def test_apply_equals_kron_matrix() -> None:
    rng = np.random.default_rng(0)
    m, n, t = 4, 8, 6
    x = rng.standard_normal((t, m * n)).astype(np.float32)
    p1 = rng.standard_normal((m, m)).astype(np.float32)
    p2 = rng.standard_normal((n, n)).astype(np.float32)
    # Row-major vec: vec(P1 X P2) = vec(X) (P1^T kron P2)
    expected = x.astype(np.float64) @ np.kron(p1.T, p2).astype(np.float64)
    got = kronecker.apply(torch.from_numpy(x), torch.from_numpy(p1), torch.from_numpy(p2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    got3 = kronecker.apply(
        torch.from_numpy(x.reshape(t, m, n)), torch.from_numpy(p1), torch.from_numpy(p2)
    )
    np.testing.assert_allclose(got3.reshape(t, -1).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_left_transposed_and_detection() -> None:
    rng = np.random.default_rng(1)
    m, n, t = 4, 8, 10
    x = torch.from_numpy(rng.standard_normal((t, m * n)).astype(np.float32))
    x[:, 3] *= 20.0
    p1 = torch.linalg.qr(torch.from_numpy(rng.standard_normal((m, m))).float())[0]
    p2 = torch.linalg.qr(torch.from_numpy(rng.standard_normal((n, n))).float())[0]
    got = kronecker.apply(x, p1, p2, left_transposed=True)
    expected = x.double().numpy() @ np.kron(p1.double().numpy(), p2.double().numpy())
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-4)
    # The op's own quantized output identifies the convention it used (int4 range, per token).
    for transposed in (False, True):
        y = kronecker.apply(x, p1, p2, left_transposed=transposed)
        scale = y.abs().amax(dim=1) / 7.0
        q = torch.clamp(torch.round(y / scale[:, None]), -8, 7).to(torch.int8)
        assert kronecker.detect_convention(x, p1, p2, q, scale) is transposed
    packed = torch.zeros(t, m * n // 8, dtype=torch.int32)
    assert kronecker.detect_convention(x, p1, p2, packed, scale) is None


def test_hadamard_spreads_an_outlier() -> None:
    x = torch.zeros(3, 16)
    x[1, 5] = 64.0
    h = torch.from_numpy(_hadamard(4)).float()
    after = kronecker.apply(x, h, h)
    s = kronecker.stats(x, after)
    assert s.absmax_before == 64.0
    assert s.absmax_after == pytest.approx(64.0 / 4)  # spread evenly over 16 channels
    assert s.kurtosis_after < s.kurtosis_before
    with pytest.raises(InputError, match="does not match"):
        kronecker.apply(torch.zeros(2, 15), h, h)


def test_parts_from_config() -> None:
    cfg = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "hidden_size": 64}
    assert parts_of("model.layers.0.self_attn.qkv_proj", "output") == ("q", "k", "v")
    assert parts_of("model.layers.0.self_attn.qkv_proj", "input") == ()
    assert part_sizes("m.qkv_proj", cfg, 64) == {"q": (0, 32), "k": (32, 48), "v": (48, 64)}
    x = torch.arange(2 * 64).reshape(2, 64)
    assert torch.equal(split("m.qkv_proj", x, cfg, "k"), x[:, 32:48])
    assert torch.equal(split("m.mlp.gate_up_proj", x, cfg, "up"), x[:, 32:])
    with pytest.raises(InputError, match="config gives Q 32"):
        part_sizes("m.qkv_proj", cfg, 60)
