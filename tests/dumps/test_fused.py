"""The numba kernels against the torch code they replace and plain numpy (bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio_backend.dumps import fused
from studio_backend.dumps.stitch.stitcher import absmax, max_diff


def _bf16(values: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(values.astype(np.float32)).to(torch.bfloat16)


def _patterns(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(bits.astype(np.uint16).view(np.int16)).view(torch.bfloat16)


def _torch_sum(shards: list[torch.Tensor]) -> torch.Tensor:
    acc = shards[0].to(torch.float32, copy=True)
    for s in shards[1:]:
        acc.add_(s)
    return acc.to(torch.bfloat16)


# sizes around the kernels' 2048-element blocks and 4-element words
SIZES = [(1,), (3,), (2048,), (4, 1023), (3, 2049), (2000, 37)]


@pytest.mark.parametrize("shape", SIZES)
def test_sum_bf16_is_bit_identical_to_torch(shape) -> None:
    rng = np.random.default_rng(1)
    scales = [1.0, 1e-3, 300.0, 1e-38]  # the last one: subnormal floats, and sums that tie
    shards = [_bf16(rng.standard_normal(shape) * s) for s in scales]
    got = fused.sum_bf16(shards)
    assert torch.equal(got.view(torch.int16), _torch_sum(shards).view(torch.int16))


def test_sum_bf16_over_every_finite_pattern_pair() -> None:
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 1 << 16, 1 << 20) for _ in range(2))
    fin = ((a & 0x7FFF) < 0x7F80) & ((b & 0x7FFF) < 0x7F80)
    shards = [_patterns(a[fin]), _patterns(b[fin])]  # overflow to inf included
    got = fused.sum_bf16(shards)
    assert torch.equal(got.view(torch.int16), _torch_sum(shards).view(torch.int16))


def test_sum_bf16_declines_nan_and_other_layouts() -> None:
    a = _bf16(np.ones(10))
    b = a.clone()
    b[3] = float("nan")
    assert fused.sum_bf16([a, b]) is None  # NaN: torch's casts disagree on the pattern
    m = _bf16(np.ones((4, 6)))
    assert fused.sum_bf16([m[:, :3], m[:, 3:]]) is None  # not contiguous
    assert fused.sum_bf16([torch.ones(4), torch.ones(4)]) is None  # float32


@pytest.mark.parametrize("shape", SIZES)
def test_agree_bf16_equals_max_diff_and_absmax(shape) -> None:
    rng = np.random.default_rng(3)
    base = rng.standard_normal(shape) * 5
    shards = [_bf16(base) for _ in range(4)]
    assert fused.agree_bf16(shards) == (0.0, None)  # bitwise equal replicas
    flat = shards[2].reshape(-1)
    flat[-1] = flat[-1] * 1.5 + 1  # a difference in the last element (the tail path)
    shards[3] = _bf16(rng.standard_normal(shape))
    want = max(max_diff(shards[0], s) for s in shards[1:]), max(absmax(s) for s in shards)
    assert fused.agree_bf16(shards) == want


def test_agree_bf16_signed_zero_and_nonfinite() -> None:
    a = _bf16(np.array([0.0, 1.0, -2.0, 3.0, 4.0]))
    b = a.clone()
    b[0] = -0.0  # another pattern, no difference in value
    assert fused.agree_bf16([a, b]) == (0.0, 4.0) and max_diff(a, b) == 0.0
    c = a.clone()
    c[4] = float("inf")
    assert fused.agree_bf16([a, c]) is None  # the torch path's NaN/inf rules apply
    assert fused.agree_bf16([a, a.clone()]) == (0.0, None)


@pytest.mark.parametrize("shape", [(33, 130), *SIZES])
def test_diff_and_scale_bf16_equals_the_torch_check(shape) -> None:
    rng = np.random.default_rng(4)
    mine, parent = (_bf16(rng.standard_normal(shape) * 9) for _ in range(2))
    lo, hi = torch.aminmax(parent)
    want = max_diff(mine, parent), max(abs(float(lo)), abs(float(hi)))
    assert fused.diff_and_scale_bf16(mine, parent) == want
    assert fused.diff_and_scale_bf16(parent, parent.clone()) == (0.0, want[1])
    parent.view(-1)[0] = float("nan")
    assert fused.diff_and_scale_bf16(mine, parent) is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (301, 77), (2, 4096)])
def test_hist_reduce_matches_numpy(dtype, shape) -> None:
    rng = np.random.default_rng(5)
    t = torch.from_numpy((rng.standard_normal(shape) * 4).astype(np.float32)).to(dtype)
    t[0, 0] = -0.0
    bits = fused.bits16(t)
    counts, chmax, chsum, tokmax = fused.hist_reduce(bits, dtype)
    x = np.abs(t.float().numpy().astype(np.float64))
    np.testing.assert_array_equal(counts, np.bincount(bits.ravel(), minlength=1 << 16))
    np.testing.assert_array_equal(chmax, x.max(0))
    np.testing.assert_array_equal(tokmax, x.max(1))
    np.testing.assert_allclose(chsum, x.sum(0), rtol=1e-12)
    assert chmax.dtype == tokmax.dtype == np.float32 and chsum.dtype == np.float64
