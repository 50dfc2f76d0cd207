"""Shared fixtures: an isolated workspace per test."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from studio_backend.gl_compat import load_triton_before_gl

# Kernel tests run Triton's CPU interpreter. The flag must be set before triton is imported:
# triton.language decorates its own helpers (reductions' combine functions) at import time.
os.environ.setdefault("TRITON_INTERPRET", "1")
# Workers run PyVista renders and Triton kernels in one process: Triton must load first.
load_triton_before_gl()

REPO = Path(__file__).resolve().parent.parent

# AppTest runs a page with its folder (app_pages/) first on sys.path, where app_pages/kernels.py would
# shadow the PyPI package `kernels` that transformers imports: load the real one first.
with contextlib.suppress(ImportError):
    import kernels  # noqa: F401


@pytest.fixture
def workspace_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh workspace directory, also exported as $STUDIO_WORKSPACE."""
    path = tmp_path / "workspace"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(path))
    return path


@pytest.fixture
def workspace(workspace_dir: Path):
    from studio_backend.workspace import open_workspace

    ws = open_workspace(workspace_dir)
    yield ws
    ws.close()
