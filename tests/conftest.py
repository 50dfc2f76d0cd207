"""Shared fixtures: an isolated workspace per test."""

from __future__ import annotations

import contextlib
import os
import signal
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


# Signal dispositions belong to the whole worker process: a test (or code it runs in-process)
# that leaves one changed alters every later test in that pytest-xdist worker. With SIGCHLD
# ignored, children are reaped by the kernel and multiprocessing's is_alive() reads a dead
# worker as alive. Checked around every test; the kernel's view too (C code can ignore SIGCHLD
# without Python's signal module seeing it).
_GUARDED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)


def _dispositions() -> dict[str, object]:
    out: dict[str, object] = {s.name: signal.getsignal(s) for s in _GUARDED}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                out["SIGCHLD ignored by the kernel"] = bool(
                    int(line.split()[1], 16) >> (signal.SIGCHLD - 1) & 1
                )
    return out


@pytest.fixture(autouse=True)
def _signals_as_found():
    """Fails a test that leaves a guarded signal's handler changed, after putting it back."""
    before = {s: signal.getsignal(s) for s in _GUARDED}
    was = _dispositions()
    yield
    now = _dispositions()
    if now != was:
        for s, handler in before.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        changed = {k: (was.get(k), now[k]) for k in now if now[k] != was.get(k)}
        pytest.fail(
            f"the test left signal handling changed (before, after): {changed}; restore it "
            "(studio_backend.procs.stop_signals, or monkeypatch)"
        )


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


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace filled by one ``studio demo`` run (about 20 s), shared by the tests of a
    session that only read it (a studio served on it writes only its owner record)."""
    import subprocess
    import sys

    pytest.importorskip("msit_llm")
    path = tmp_path_factory.mktemp("demo") / "workspace"
    out = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(path), "demo"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return path
