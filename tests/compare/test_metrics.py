"""The comparison metrics equal an independent numpy computation of their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio_backend.compare.metrics import compare, threads


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


def _assert_equal_numpy(ta: torch.Tensor, tb: torch.Tensor, whole: dict, tok: dict) -> None:
    """Whole and per-token metrics equal the numpy oracle (NaN where it gives NaN)."""
    na, nb = ta.double().numpy(), tb.double().numpy()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        want = numpy_metrics(na, nb)
        rows = [numpy_metrics(na[t], nb[t]) for t in range(na.shape[0])]
    for m, v in want.items():
        assert whole[m] == pytest.approx(v, rel=1e-9, abs=1e-15, nan_ok=True), m
    for t, row in enumerate(rows):
        for m, v in row.items():
            assert tok[m][t] == pytest.approx(v, rel=1e-9, abs=1e-15, nan_ok=True), (m, t)


PAIRS = [
    (torch.float16, torch.float16), (torch.float64, torch.float64), (torch.float32, torch.bfloat16),
    (torch.bfloat16, torch.float16), (torch.float64, torch.float32),
]  # fmt: skip


@pytest.mark.parametrize(("da", "db"), PAIRS)
def test_every_stored_dtype_and_mixed_pairs_equal_numpy(da: torch.dtype, db: torch.dtype) -> None:
    # 2500 channels: rows span three of the kernel's 1024-column chunks, the last one partial
    rng = np.random.default_rng(4)
    a = rng.standard_normal((5, 2500)) * 3
    b = a * (1 + rng.normal(0, 1e-3, a.shape))
    a[1, :7] = 0.0  # relative errors against zero use max(|x|, 1e-12)
    ta, tb = torch.from_numpy(a).to(da), torch.from_numpy(b).to(db)
    whole, tok = compare(ta, tb)
    _assert_equal_numpy(ta, tb, whole, tok)


def test_fp8_is_read_through_float32() -> None:
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8_e4m3fn")
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.standard_normal((3, 40)).astype(np.float32))
    ta, tb = a.to(torch.float8_e4m3fn), (a * 1.01).to(torch.bfloat16)
    whole, tok = compare(ta, tb)
    _assert_equal_numpy(ta.float(), tb, whole, tok)


def test_strided_views_read_in_place() -> None:
    # a fused part is a column slice of the stored tensor (rows not contiguous with each other),
    # a transposed tensor has no contiguous rows at all
    rng = np.random.default_rng(6)
    full = torch.from_numpy(rng.standard_normal((6, 300)).astype(np.float32)).bfloat16()
    other = (full.float() * 1.002).bfloat16()
    a, b = full[:, 100:228], other[:, 100:228]
    assert not a.is_contiguous()
    whole, tok = compare(a, b)
    _assert_equal_numpy(a, b, whole, tok)
    at, bt = full[:, :50].t(), other[:, :50].t()
    whole, tok = compare(at, bt)
    _assert_equal_numpy(at, bt, whole, tok)


def test_nan_and_inf_propagate_per_token() -> None:
    # an fp16 overflow (inf) or a NaN in run B: its token's cosine, rel_diff and maxima say so
    # (NaN / inf), the other tokens are measured as usual, the whole tensor is NaN
    rng = np.random.default_rng(7)
    a = rng.standard_normal((4, 64)).astype(np.float32)
    b = a * 1.001
    b[1, 5] = np.inf
    b[2, 9] = np.nan
    ta, tb = torch.from_numpy(a).half(), torch.from_numpy(b).half()
    whole, tok = compare(ta, tb)
    _assert_equal_numpy(ta, tb, whole, tok)
    assert np.isnan(tok["rel_diff"][1]) and tok["max_abs_error"][1] == np.inf
    assert np.isnan(tok["rel_diff"][2]) and np.isnan(tok["max_abs_error"][2])
    assert np.isfinite(tok["rel_diff"][[0, 3]]).all() and np.isnan(whole["rel_diff"])


def test_pairs_split_into_many_tasks_on_several_threads(monkeypatch) -> None:
    # the same numbers however the rows are cut into tasks and threads; pairs keep their order
    from studio_backend.compare import metrics

    rng = np.random.default_rng(8)
    a = torch.from_numpy(rng.standard_normal((37, 700)).astype(np.float32))
    b = a + 1e-3 * torch.from_numpy(rng.standard_normal((37, 700)).astype(np.float32))
    ids = torch.tensor([[1, 2, 3]])
    one = metrics.compare_all([lambda: (a, b)], workers=1)[0]
    monkeypatch.setattr(metrics, "TASK", 1400)  # two rows per task: 19 tasks
    got = metrics.compare_all([lambda: (a, b), lambda: (ids, ids + 1), lambda: (b, a)], workers=3)
    for m in METRIC_NAMES:
        np.testing.assert_array_equal(got[0][1][m], one[1][m])
        assert got[0][0][m] == one[0][m] or (np.isnan(got[0][0][m]) and np.isnan(one[0][m]))
    assert got[1][0]["mismatch"] == 1.0
    assert got[2][0]["euclidean"] == pytest.approx(one[0]["euclidean"], rel=1e-12)


METRIC_NAMES = ("cosine", "euclidean", "max_abs_error", "max_rel_error", "within_0_1pct",
                "within_0_5pct", "rel_diff")  # fmt: skip
