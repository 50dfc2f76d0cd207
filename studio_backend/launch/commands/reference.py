"""The studio's CPU reference engine: ``studio serve-reference`` with its own dump options."""

from __future__ import annotations

import sys
from pathlib import Path

from studio_backend.launch.commands import Command, reject_duplicates
from studio_backend.launch.spec import LaunchSpec

OWNED = (
    "--model", "--tp", "--port", "--host", "--dump-tool", "--dump-path", "--token-range",
    "--layer-name", "--dump-mode", "--api-list", "--dump-statistics-mode",
)  # fmt: skip


# The studio's own source tree: the server must run this backend, not another installed copy.
SOURCE_ROOT = str(Path(__file__).resolve().parents[3])


def build(spec: LaunchSpec, python: str = sys.executable) -> Command:
    reject_duplicates(spec, OWNED)
    argv = [
        python, "-m", "studio_backend.cli", "serve-reference",
        "--model", spec.model_dir,
        "--tp", str(spec.tp),
        "--port", str(spec.port),
        "--host", spec.host,
    ]  # fmt: skip
    dump = spec.dump
    if dump.tool is not None:
        argv += [
            "--dump-tool", dump.tool, "--dump-path", dump.dump_path,
            # serve-reference takes inclusive ranges: steps START..END-1
            "--token-range", f"{dump.token_start}-{dump.token_end - 1}",
        ]  # fmt: skip
        if dump.tool == "msit":
            argv += ["--layer-name", dump.layer_name, "--dump-mode", ",".join(dump.modes)]
            if dump.api_list:
                # The reference engine names APIs without their module (npu_kronecker_quant).
                argv += ["--api-list", ",".join(a.rsplit(".", 1)[-1] for a in dump.api_list)]
            if dump.statistics_mode:
                argv += ["--dump-statistics-mode", str(dump.statistics_mode)]
    argv += list(spec.extra_args)
    return Command(argv=argv, env={"PYTHONUNBUFFERED": "1", "PYTHONPATH": SOURCE_ROOT})
