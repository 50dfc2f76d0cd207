"""The comparison metrics equal an independent numpy computation of their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.compare.metrics import compare, threads


def numpy_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """msprobe's and SGLang's definitions, straight from the formulas (a = reference)."""
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    rel = np.abs(y - x) / np.maximum(np.abs(x), 1e-12)
    return {
        "cosine": float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))),
        "euclidean": float(np.linalg.norm(y - x)),
        "max_abs_error": float(np.max(np.abs(y - x))),
        "max_rel_error": float(np.max(rel)),
        "within_0_1pct": float(np.mean(rel <= 0.001)),
        "within_0_5pct": float(np.mean(rel <= 0.005)),
        # SGLang's formula as written (the implementation uses the identical sum((x-y)^2) form)
        "rel_diff": float(1 - 2 * np.sum(x * y) / (np.sum(x * x) + np.sum(y * y))),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_whole_and_per_token_equal_numpy(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((9, 33)).astype(np.float32)
    b = a * (1 + rng.normal(0, 2e-3, a.shape)).astype(np.float32)
    b[4] += rng.standard_normal(33).astype(np.float32)  # one token parts far more
    ta, tb = torch.from_numpy(a).to(dtype), torch.from_numpy(b).to(dtype)
    whole, tok = compare(ta, tb)
    na, nb = ta.double().numpy(), tb.double().numpy()
    want = numpy_metrics(na, nb)
    for m, v in want.items():
        assert whole[m] == pytest.approx(v, rel=1e-9, abs=1e-15), m
    for t in range(a.shape[0]):
        row = numpy_metrics(na[t], nb[t])
        for m, v in row.items():
            assert tok[m][t] == pytest.approx(v, rel=1e-9, abs=1e-15), (m, t)
    assert int(np.argmax(tok["rel_diff"])) == 4
    # share metrics are exact counts
    assert whole["within_0_5pct"] * a.size == pytest.approx(round(whole["within_0_5pct"] * a.size))


def test_identical_zero_and_integer_tensors() -> None:
    z = torch.zeros(3, 4)
    whole, tok = compare(z, z.clone())
    assert whole["cosine"] == 1.0 and whole["rel_diff"] == 0.0 and whole["within_0_1pct"] == 1.0
    x = torch.arange(12.0).reshape(3, 4)
    whole, tok = compare(x, x.clone())
    assert whole["rel_diff"] == 0.0 and whole["max_abs_error"] == 0.0 and whole["cosine"] == 1.0
    np.testing.assert_array_equal(tok["rel_diff"], [0.0, 0.0, 0.0])
    # one vector zero: cosine 0, rel_diff 1 (all of the energy is difference)
    whole, tok = compare(torch.ones(1, 4), torch.zeros(1, 4))
    assert whole["cosine"] == 0.0 and whole["rel_diff"] == 1.0
    ids = torch.tensor([[1, 2], [3, 4]])
    whole, tok = compare(ids, torch.tensor([[1, 2], [3, 5]]))
    assert whole["mismatch"] == 0.25 and np.isnan(whole["rel_diff"])
    np.testing.assert_array_equal(tok["mismatch"], [0.0, 0.5])


def test_tiny_differences_keep_precision() -> None:
    # fp32 runs that agree to rounding: the subtraction form would cancel to 0 or go negative
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.standard_normal((4, 64)))
    b = a + 1e-9 * torch.from_numpy(rng.standard_normal((4, 64)))
    whole, _ = compare(a, b)
    d = (b - a).numpy().ravel()
    x, y = a.numpy().ravel(), b.numpy().ravel()
    assert whole["rel_diff"] == pytest.approx(
        np.sum(d * d) / (np.sum(x * x) + np.sum(y * y)), rel=1e-12
    )
    assert 0 < whole["rel_diff"] < 1e-17


def test_many_blocks_equal_numpy_and_threads_restored() -> None:
    # 70 tokens x 2048 channels span three 32-token blocks; a zero reference row and a zero
    # element exercise the conventions at zero inside a block
    rng = np.random.default_rng(2)
    a = rng.standard_normal((70, 2048)).astype(np.float32)
    b = a * (1 + rng.normal(0, 3e-3, a.shape)).astype(np.float32)
    a[40], a[3, 7] = 0.0, 0.0
    ta, tb = torch.from_numpy(a).bfloat16(), torch.from_numpy(b).bfloat16()
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
        whole, tok = compare(ta, tb)
    assert torch.get_num_threads() == before
    na, nb = ta.double().numpy(), tb.double().numpy()
    for m, v in numpy_metrics(na, nb).items():
        assert whole[m] == pytest.approx(v, rel=1e-9, abs=1e-15), m
    for t in (0, 31, 32, 40, 69):
        with np.errstate(invalid="ignore"):  # row 40: numpy's cosine divides 0 by 0
            row = numpy_metrics(na[t], nb[t])
        for m, v in row.items():
            if t == 40 and m in ("cosine", "rel_diff"):
                continue  # the conventions at zero, checked below
            assert tok[m][t] == pytest.approx(v, rel=1e-9, abs=1e-15), (m, t)
    assert tok["cosine"][40] == 0.0 and tok["rel_diff"][40] == 1.0
