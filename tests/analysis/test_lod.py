"""LOD pooling keeps every block's signed extreme and its exact position (numpy oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from studio_backend.analysis.lod import (
    build_grid,
    grid_shape,
    parse_channels,
    pool_signed_absmax,
    transform,
)
from studio_backend.errors import InputError


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


@pytest.mark.parametrize(
    "shape,cells,want",
    [
        ((2000, 6144), 80_000, (200, 400)),  # 2 channel cells per token cell
        ((2000, 6144), 20_000, (100, 200)),
        ((40, 64), 80_000, (40, 64)),  # small: nothing pooled
        ((40, 6144), 80_000, (40, 2000)),  # few tokens: the budget goes to channels
        ((100_000, 64), 80_000, (1250, 64)),  # few channels: the budget goes to tokens
        ((1, 5), 20_000, (1, 5)),
    ],
)
def test_grid_shape_fits_the_cell_budget(shape, cells, want) -> None:
    assert grid_shape(*shape, cells) == want
    g = build_grid(np.ones(shape, dtype=np.float32), max_tokens=want[0], max_channels=want[1])
    assert g.values.size <= cells


def test_transform_of_pooled_raw_equals_pooling_the_transform() -> None:
    """The page pools once and applies |x| / log to the cells: the same grid as pooling with
    the transform (both are monotone in |x|)."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((300, 700)).astype(np.float32) * 5
    a[17, 400] = -900.0
    plain = build_grid(a, max_tokens=30, max_channels=70)
    for absolute, log in ((True, False), (False, True), (True, True)):
        g = build_grid(a, max_tokens=30, max_channels=70, absolute=absolute, log=log)
        np.testing.assert_array_equal(transform(plain.raw, absolute=absolute, log=log), g.values)
        np.testing.assert_array_equal(plain.tokens, g.tokens)
        np.testing.assert_array_equal(plain.channels, g.channels)
