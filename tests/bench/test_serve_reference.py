"""`studio bench serve` against the studio's own reference engine (`studio serve-reference`).

Skipped until the reference engine's server is present in this checkout."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studio_backend.bench.serve import ServeBenchConfig, run_serve_bench
from tests.conftest import REPO


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (_present("studio_backend.engines.cli") and _present("studio_backend.models.create")),
        reason="the reference engine (studio serve-reference) is not in this checkout",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_bench_against_reference_engine(tmp_path: Path) -> None:
    from studio_backend.models.create import create_model

    model = create_model(tmp_path / "model", preset="tiny", seed=0)
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio_backend.cli", "serve-reference", "--model", str(model),
         "--tp", "1", "--port", str(port), "--host", "127.0.0.1"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "reference server not ready"
            time.sleep(0.5)
        result = run_serve_bench(
            ServeBenchConfig(url=url, batches=[1, 2, 4], input_tokens=1, output_tokens=8)
        )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    rows = result["serve_results"]
    # exact: the engine decodes max_tokens per request (no EOS stop) and reports usage
    assert [r["output_tokens"] for r in rows] == [8, 16, 32]
    assert all(r["tokens_per_s"] > 0 for r in rows)
