"""The studio's CPU reference engine: ``studio serve-reference`` with its own dump options."""

from __future__ import annotations

import sys

from backend.launch.commands import Command, reject_duplicates
from backend.launch.spec import LaunchSpec

OWNED = ("--model", "--tp", "--port", "--host", "--dump-tool", "--dump-path")


def build(spec: LaunchSpec, python: str = sys.executable) -> Command:
    reject_duplicates(spec, OWNED)
    argv = [
        python, "-m", "backend.cli", "serve-reference",
        "--model", spec.model_dir,
        "--tp", str(spec.tp),
        "--port", str(spec.port),
        "--host", spec.host,
    ]  # fmt: skip
    if spec.dump.tool is not None:
        argv += ["--dump-tool", spec.dump.tool, "--dump-path", spec.dump.dump_path]
    argv += list(spec.extra_args)
    return Command(argv=argv, env={"PYTHONUNBUFFERED": "1"})
