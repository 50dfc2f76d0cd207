"""Synthetic msit dumps whose unsharded truth is known exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_backend.dumps import synthetic as S


@pytest.fixture
def synth_dump(tmp_path: Path):
    """Factory: (tp, **kw) -> (session dir, truth, cfg)."""

    def make(tp: int, tokens=(5, 2), seed: int = 0, **kw):
        cfg = kw.pop("cfg", S.SynthConfig())
        truth = S.make_truth(cfg, list(tokens), seed=seed, outlier=kw.pop("outlier", 0.0))
        session = S.write_msit(tmp_path / f"dump_tp{tp}_{seed}", cfg, truth, tp, **kw)
        return session, truth, cfg

    return make
