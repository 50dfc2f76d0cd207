"""LOD pooling keeps every block's signed extreme and its exact position (numpy oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.analysis.lod import build_grid, parse_channels, pool_signed_absmax, transform
from backend.errors import InputError


def _oracle(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    br, bc = math.ceil(a.shape[0] / rows), math.ceil(a.shape[1] / cols)
    out = np.zeros((math.ceil(a.shape[0] / br), math.ceil(a.shape[1] / bc)), dtype=a.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = a[i * br : (i + 1) * br, j * bc : (j + 1) * bc]
            flat = block.reshape(-1)
            out[i, j] = flat[np.argmax(np.abs(flat))]
    return out


@pytest.mark.parametrize("shape,grid", [((37, 53), (5, 7)), ((100, 64), (10, 8)), ((3, 4), (9, 9))])
def test_pool_matches_blockwise_oracle(shape, grid) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype(np.float32)
    vals, row, col = pool_signed_absmax(torch.from_numpy(a), *grid)
    np.testing.assert_array_equal(vals.numpy(), _oracle(a, *grid))
    # The recorded positions point at the element that was kept.
    np.testing.assert_array_equal(a[row.numpy(), col.numpy()], vals.numpy())


def test_global_negative_extreme_survives_exactly() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2000, 6144)).astype(np.float32)
    a[1234, 5000] = -4321.5
    g = build_grid(torch.from_numpy(a).to(torch.bfloat16), max_tokens=200, max_channels=400)
    assert g.pooled and g.values.shape == (200, 384)
    i, j = np.unravel_index(np.argmax(np.abs(g.values)), g.values.shape)
    assert g.values[i, j] == -4320.0  # bf16 rounding of -4321.5, sign kept
    assert (g.tokens[i, j], g.channels[i, j]) == (1234, 5000)


def test_sort_filter_range_and_transforms() -> None:
    a = np.zeros((6, 5), dtype=np.float32)
    a[2, 3] = -50.0
    a[4, 1] = 9.0
    a[0, 0] = 1.0
    g = build_grid(a, token_range=(1, 6), channels=np.array([0, 1, 3]), sort_channels=True)
    assert not g.pooled and g.source_shape == (5, 3)
    assert list(g.channels[0]) == [3, 1, 0]  # sorted by absmax, original ids kept
    assert g.values[1, 0] == -50.0 and g.tokens[1, 0] == 2
    ga = build_grid(a, absolute=True, log=True)
    assert ga.values[2, 3] == pytest.approx(np.log10(51.0))
    assert ga.raw[2, 3] == -50.0
    np.testing.assert_allclose(transform(np.array([-9.0]), log=True), [-1.0])


def test_parse_channels() -> None:
    assert parse_channels("0-2, 7", 10).tolist() == [0, 1, 2, 7]
    assert parse_channels("", 3).tolist() == [0, 1, 2]
    with pytest.raises(InputError, match="outside"):
        parse_channels("5-12", 10)
    with pytest.raises(InputError, match="cannot read"):
        parse_channels("a-b", 10)
