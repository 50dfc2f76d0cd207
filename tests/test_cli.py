from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio_backend.cli import build_parser, main
from studio_backend.workspace import open_workspace
from studio_backend.workspace.migrate import available

REPO = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: studio" in capsys.readouterr().out


def test_info_json(workspace_dir: Path) -> None:
    ws = open_workspace(workspace_dir)
    ws.log("test", "x")
    ws.log("test", "y")
    ws.close()
    out = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(workspace_dir), "info", "--json"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    info = json.loads(out.stdout)
    assert info["workspace"] == str(workspace_dir.resolve())
    assert info["schema_version"] == available()[-1].version
    assert info["tables"]["activity"] == 2
    assert info["tables"]["schema_migrations"] == len(available())
    stacks = {s["name"]: s for s in info["hardware"]}
    assert stacks["CPU (torch)"]["version"] == torch.__version__
    assert stacks["CUDA"]["available"] == torch.cuda.is_available()
    assert set(stacks) >= {"NPU", "triton", "msit_llm", "msprobe", "vllm", "vllm-ascend", "sglang"}


def test_info_human_readable(workspace_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(workspace_dir), "info"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "schema version" in out.stdout and "hardware stacks" in out.stdout


def test_parsing_the_command_line_imports_neither_torch_nor_pandas() -> None:
    """Every command pays for building the parser: torch and pandas (seconds on a loaded box)
    are imported by the commands that use them, so `studio render` starts its workers first."""
    code = (
        "import sys\n"
        "from studio_backend.cli import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in ('torch', 'pandas', 'pyvista') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
