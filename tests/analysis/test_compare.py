"""Comparison metrics equal direct numpy computations (exact expected values)."""

from __future__ import annotations

import numpy as np
import pytest

from studio_backend.analysis.compare import compare, jaccard, spearman
from studio_backend.errors import InputError


def test_metrics_on_hand_values() -> None:
    ref = np.array([[1.0, 2.0, -4.0, 8.0], [100.0, 0.5, 3.0, -1.0]])
    act = ref.copy()
    act[0, 0] = 1.0005  # rel 5e-4: inside 0.1 % and 0.5 %
    act[1, 0] = 100.05  # rel 5e-4
    act[1, 3] = -1.02  # rel 2e-2
    act[0, 1] = 2.001  # rel 5e-4
    c = compare(act, ref, k=2)
    cos = float((act * ref).sum() / np.linalg.norm(act) / np.linalg.norm(ref))
    assert c.cosine == pytest.approx(cos, rel=1e-15)
    assert c.max_abs_error == pytest.approx(0.05, abs=1e-12)
    assert c.max_rel_error == pytest.approx(0.02, rel=1e-9)
    assert c.within_0_1pct == 7 / 8  # only the 2e-2 element is outside
    assert c.within_0_5pct == 7 / 8
    # top-2 channels by absmax: ref {0 (100), 3 (8)}; act {0 (100.05), 3 (8)} -> Jaccard 1
    assert c.topk_jaccard == 1.0
    assert c.absmax_spearman == pytest.approx(1.0)


def test_spearman_and_jaccard_exact() -> None:
    # ranks a: 1 2 3 4 5, ranks b: 2 1 4 3 5 -> rho = 1 - 6*4/(5*24) = 0.8
    assert spearman(np.array([1, 2, 3, 4, 5.0]), np.array([2, 1, 4, 3, 5.0])) == pytest.approx(0.8)
    assert jaccard(np.array([1, 2, 3]), np.array([2, 3, 4])) == 0.5


def test_shape_mismatch_is_clear() -> None:
    with pytest.raises(InputError, match=r"shapes differ: \(2, 3\) vs \(3, 2\)"):
        compare(np.zeros((2, 3)), np.zeros((3, 2)))
