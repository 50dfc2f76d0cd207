"""Outlier statistics against direct numpy computations on hand-built tensors."""

from __future__ import annotations

import numpy as np
import pytest

from studio_backend.analysis.outliers import (
    channel_absmax,
    channel_table,
    kurtosis,
    massive_mask,
    summarize,
    top_channels,
    top_k,
)


def _tensor() -> np.ndarray:
    a = np.full((4, 8), 0.05, dtype=np.float32)
    a[1, 3] = -250.0  # massive: > 100 and > 1000 x row median 0.05 (= 50)
    a[2, 5] = 120.0  # > 100 but row 2 has median 0.05 -> massive too
    a[3, :] = 1.0
    a[3, 6] = 150.0  # > 100 but only 150x the row median 1.0 -> NOT massive
    a[0, 2] = 7.0  # LLM.int8 outlier only
    return a


def test_absmax_counts_massive() -> None:
    a = _tensor()
    np.testing.assert_array_equal(channel_absmax(a), np.abs(a).max(axis=0))
    rows, cols = massive_mask(a).numpy().nonzero()
    assert (rows.tolist(), cols.tolist()) == ([1, 2], [3, 5])
    s = summarize(a)
    assert s.over_6 == int((np.abs(a) > 6).sum()) == 4
    assert s.massive == 2
    assert s.absmax == 250.0 and s.top_channel == 3
    assert s.top_to_median == pytest.approx(250.0 / np.float32(np.median(np.abs(a))))


def test_kurtosis_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 16))
    a[5, 2] = 40.0
    d = a - a.mean()
    expected = (d**4).mean() / (d**2).mean() ** 2
    assert kurtosis(a) == pytest.approx(expected, rel=1e-12)
    dc = a - a.mean(axis=0)
    per_ch = (dc**4).mean(axis=0) / (dc**2).mean(axis=0) ** 2
    np.testing.assert_allclose(kurtosis(a, dim=0), per_ch, rtol=1e-12)


def test_top_k_and_top_channels() -> None:
    a = _tensor()
    t = top_k(a, 3)
    assert t.to_dict("list") == {
        "token": [1, 3, 2],
        "channel": [3, 6, 5],
        "value": [-250.0, 150.0, 120.0],
    }
    assert top_channels(a, 2).tolist() == [3, 6]


def test_channel_table() -> None:
    a = _tensor()
    t = channel_table(a, 3)
    assert t["channel"].tolist() == [3, 6, 5]
    assert t["token"].tolist() == [1, 3, 2]
    assert t["value"].tolist() == [-250.0, 150.0, 120.0]
    assert t["mean_abs"].tolist() == pytest.approx(np.abs(a).mean(axis=0)[[3, 6, 5]].tolist())
    assert t["tokens_over_6"].tolist() == [1, 1, 1]


def test_summary_counts_nan_and_inf_and_the_table_names_them() -> None:
    """An fp16 overflow leaves NaN / inf: the summary counts them (numpy's count is the oracle)
    and the top-outlier table's note names each non-finite value."""
    import pandas as pd

    from studio_backend.analysis import outliers

    x = np.random.default_rng(5).normal(size=(30, 16)).astype(np.float32)
    x[3, 4], x[7, 1], x[9, 9], x[11, 2] = np.nan, np.inf, -np.inf, np.nan
    s = outliers.summarize(x)
    assert (s.nan, s.inf) == (int(np.isnan(x).sum()), int(np.isinf(x).sum())) == (2, 2)
    assert np.isnan(s.absmax)  # max |x| reads nan: the page warns beside it
    finite = outliers.summarize(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
    assert (finite.nan, finite.inf) == (0, 0)
    note = outliers.non_finite_note(pd.Series([1.0, np.nan, np.inf, -np.inf, -2.0]))
    assert note.tolist() == ["", "NaN", "+inf", "-inf", ""]
