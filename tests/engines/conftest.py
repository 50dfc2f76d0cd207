"""A tiny checkpoint (no planted outliers, so logits are informative) shared by engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_backend.models.create import create_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_model(tmp_path_factory.mktemp("engine") / "tiny", preset="tiny", seed=0)
