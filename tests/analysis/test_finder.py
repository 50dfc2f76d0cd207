"""Outlier finder: the ranking from stored statistics equals a numpy ranking of the same tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("studio_backend.dumps.query", reason="needs the dumps package")

from studio_backend.analysis import finder  # noqa: E402
from tests.analysis.dumpdata import write_dump  # noqa: E402


@pytest.fixture
def ranked(tmp_path: Path):
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.workspace import open_workspace

    session, truth = write_dump(tmp_path / "dump", tokens=24)
    ws = open_workspace(tmp_path / "ws")
    run_id = ingest_dump(ws, session)
    yield ws, run_id, {k: v for k, v in truth.items() if v.dtype != np.int64}
    ws.close()


def _kurtosis(a: np.ndarray) -> float:
    d = a.astype(np.float64).ravel()
    d = d - d.mean()
    return float((d**4).mean() / (d**2).mean() ** 2) - 3.0  # excess, as stored


def _massive(a: np.ndarray) -> int:
    m = np.abs(a.reshape(-1, a.shape[-1]).astype(np.float64))
    med = np.median(m, axis=1, keepdims=True)
    return int(((m > 100) & (m > 1000 * med)).sum())


@pytest.mark.parametrize(
    ("by", "oracle"),
    [("max |x|", lambda a: float(np.abs(a).max())), ("kurtosis", _kurtosis),
     ("massive count", _massive)],
)  # fmt: skip
def test_ranking_equals_numpy(ranked, by, oracle) -> None:
    ws, run_id, truth = ranked
    got = finder.rank(ws, run_id, by=by, limit=1000)
    assert len(got) == len(truth)  # every floating tensor, token ids left out
    col = {"max |x|": "max_abs", "kurtosis": "excess_kurtosis", "massive count": "massive"}[by]
    want = {k: oracle(v) for k, v in truth.items()}
    # Same values per tensor, and the order is numpy's descending order of them.
    keys = list(zip(got.module, got.io, got.idx, strict=True))
    np.testing.assert_allclose(got[col].to_numpy(float), [want[k] for k in keys], rtol=1e-5)
    np.testing.assert_allclose(
        got[col].to_numpy(float),
        np.sort(np.asarray(list(want.values()), dtype=float))[::-1],
        rtol=1e-9,
    )
    expected = sorted(want, key=lambda k: -want[k])
    if by == "max |x|":  # distinct values: the exact order. (Scaled copies tie in kurtosis,
        assert keys == expected  # massive counts are 0 or 1: their order is checked above.)


def test_roles_name_hidden_state_and_residual() -> None:
    assert finder.index_label("model.layers.3", "output", 1) == "1 (residual)"
    assert finder.index_label("model.layers.3", "output", 0) == "0 (hidden state)"
    assert finder.index_label("model.layers.3.input_layernorm", "input", 1) == "1 (residual)"
    assert finder.index_label("model.layers.3.mlp.down_proj", "output", 0) == "0"
    with pytest.raises(Exception, match="rank by one of"):
        finder.rank(None, "r", by="mean")
