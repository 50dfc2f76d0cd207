"""Statistics against plain numpy, and as stored for ingested tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio_backend.dumps import stats
from studio_backend.dumps.ingest import ingest_dump


def _numpy_oracle(arr: np.ndarray) -> dict[str, float]:
    x = arr.astype(np.float64).reshape(arr.shape[0], -1)
    a = np.abs(x)
    d = x - x.mean()
    med = float(np.partition(a.ravel(), (a.size - 1) // 2)[(a.size - 1) // 2])  # lower median
    return {
        "min": x.min(), "max": x.max(), "mean": x.mean(), "std": x.std(), "absmax": a.max(),
        "l2": float(np.sqrt((x * x).sum())), "kurtosis": (d**4).mean() / (d**2).mean() ** 2 - 3,
        "over6_count": int((a > 6).sum()), "median_abs": med,
        "massive_count": int((a > max(100.0, 1000 * med)).sum()),
    }  # fmt: skip


@pytest.mark.parametrize("shape", [(37, 64), (9, 4, 8)])
def test_scalars_vectors_and_topk_match_numpy(shape) -> None:
    rng = np.random.default_rng(3)
    arr = (rng.standard_normal(shape) * 2).astype(np.float32)
    arr.reshape(shape[0], -1)[5, 7] = 2500.0  # a massive activation
    arr.reshape(shape[0], -1)[2, 1] = -9.0
    st = stats.compute(torch.from_numpy(arr))
    want = _numpy_oracle(arr)
    for k, v in want.items():
        assert getattr(st, k) == pytest.approx(v, rel=1e-5, abs=1e-6), k  # float32 sums
    flat = arr.reshape(shape[0], -1).astype(np.float64)
    np.testing.assert_allclose(st.channel_absmax, np.abs(flat).max(0), rtol=1e-7)
    np.testing.assert_allclose(st.channel_mean_abs, np.abs(flat).mean(0), rtol=1e-5)
    np.testing.assert_allclose(st.token_absmax, np.abs(flat).max(1), rtol=1e-7)
    order = np.argsort(-np.abs(flat).ravel(), kind="stable")[: stats.TOP_K]
    assert [(t, c) for t, c, _ in st.top[:2]] == [(5, 7), divmod(int(order[1]), flat.shape[1])]
    assert st.top[0][2] == 2500.0 and st.massive_count == 1


def test_nan_and_inf_are_counted_not_propagated() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    arr[0, 0], arr[1, 1] = np.nan, np.inf
    st = stats.compute(torch.from_numpy(arr))
    finite = arr[np.isfinite(arr)].astype(np.float64)
    assert (st.nan_count, st.inf_count) == (1, 1)
    assert st.mean == pytest.approx(finite.mean()) and st.max == finite.max()


def test_ingest_stores_stats_and_outliers(synth_dump, workspace) -> None:
    session, truth, _ = synth_dump(2, outlier=850.0)
    run = ingest_dump(workspace, session)
    row = (
        workspace.cursor()
        .execute(
            "SELECT s.absmax, s.massive_count, s.channel_absmax, o.token, o.channel, o.value "
            "FROM dump_tensors t JOIN dump_stats s USING (tensor_id) JOIN dump_outliers o USING (tensor_id) "
            "WHERE t.run_id = ? AND t.step = 0 AND t.module = 'model.layers.1.input_layernorm' "
            "AND t.io = 'input' AND o.k = 0",
            [run],
        )
        .fetchone()
    )
    x = truth[(0, "model.layers.1.input_layernorm", "input", 0)]
    assert row[0] == 850.0 and row[1] == 1 and row[3:] == (0, 3, 850.0)
    np.testing.assert_allclose(row[2], np.abs(x).max(0))
    n_stitched, n_stats = (
        workspace.cursor()
        .execute(
            "SELECT count(*), count(s.tensor_id) FROM dump_tensors t LEFT JOIN dump_stats s USING (tensor_id) "
            "WHERE t.run_id = ? AND t.rank IS NULL AND t.part IS NULL",  # parts: on demand
            [run],
        )
        .fetchone()
    )
    assert n_stitched == n_stats > 0


def test_bf16_median_histogram_matches_numpy() -> None:
    rng = np.random.default_rng(11)
    t = torch.from_numpy(rng.standard_normal((301, 77)).astype(np.float32) * 0.3).to(torch.bfloat16)
    t[4, 5] = -1504.0  # exact in bf16
    a = np.abs(t.float().numpy()).ravel()
    want = float(np.partition(a, (a.size - 1) // 2)[(a.size - 1) // 2])
    st = stats.compute(t)
    assert st.median_abs == want
    assert st.massive_count == int((a > max(100.0, 1000 * want)).sum()) == 1
    assert st.top[0] == (4, 5, -1504.0)
    order = np.argsort(-a, kind="stable")[: stats.TOP_K]
    assert sorted(abs(v) for *_, v in st.top) == sorted(a[order].tolist())


def test_process_pool_gives_the_same_statistics(synth_dump, workspace, tmp_path) -> None:
    from studio_backend.workspace import open_workspace

    session, _, _ = synth_dump(2)
    run = ingest_dump(workspace, session)
    other = open_workspace(tmp_path / "ws2")
    try:
        assert ingest_dump(other, session, stats_workers=2) == run
        q = "SELECT t.step, t.module, t.io, s.std, s.kurtosis, s.channel_absmax FROM dump_stats s JOIN dump_tensors t USING (tensor_id) ORDER BY 1, 2, 3"
        assert other.cursor().execute(q).fetchall() == workspace.cursor().execute(q).fetchall()
    finally:
        other.close()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_histogram_path_matches_numpy(dtype) -> None:
    rng = np.random.default_rng(11)
    t = torch.from_numpy((rng.standard_normal((53, 3, 40)) * 3).astype(np.float32)).to(dtype)
    t[7, 1, 5] = -5000.0  # massive (> 1000 x median |x|), negative
    t[3, 0, 0] = 9.5
    st = stats.compute(t)
    arr = t.float().numpy()  # the exact 16-bit values
    want = _numpy_oracle(arr)
    for k, v in want.items():
        assert getattr(st, k) == pytest.approx(v, rel=1e-12, abs=1e-12), k  # exact float64 sums
    flat = arr.reshape(arr.shape[0], -1).astype(np.float64)
    np.testing.assert_array_equal(st.channel_absmax, np.abs(flat).max(0))
    np.testing.assert_array_equal(st.token_absmax, np.abs(flat).max(1))
    np.testing.assert_allclose(st.channel_mean_abs, np.abs(flat).mean(0), rtol=1e-6)
    assert (st.nan_count, st.inf_count, st.numel) == (0, 0, arr.size)
    assert st.top[0] == (7, 1 * 40 + 5, float(t[7, 1, 5])) and st.massive_count == 1
    order = np.argsort(-np.abs(flat).ravel(), kind="stable")[: stats.TOP_K]
    assert sorted(abs(v) for *_, v in st.top) == sorted(np.abs(flat).ravel()[order].tolist())


def test_16bit_with_nan_falls_back_and_counts() -> None:
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16)
    t[0, 0], t[1, 1], t[2, 2] = float("nan"), float("inf"), float("-inf")
    st = stats.compute(t)
    finite = t.float().numpy()[np.isfinite(t.float().numpy())].astype(np.float64)
    assert (st.nan_count, st.inf_count) == (1, 2)
    assert st.mean == pytest.approx(finite.mean()) and st.max == finite.max()
