"""``python -m sglang.launch_server`` with seed 002's Ascend flags and SGLang's own dump options."""

from __future__ import annotations

import sys

from studio_backend.launch.commands import Command, ServingFlags, reject_duplicates
from studio_backend.launch.spec import LaunchSpec

RECORDER_DIR_ENV = "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"
FLAGS = ServingFlags(
    tp="--tp-size", max_model_len="--context-length", enforce_eager="--disable-cuda-graph"
)
OWNED = FLAGS.owned(
    "--model-path", "--tp", "--attention-backend", "--sampling-backend",
    "--debug-tensor-dump-output-folder", "--expert-distribution-recorder-mode",
    "--expert-distribution-recorder-buffer-size",
)  # fmt: skip


def build(spec: LaunchSpec, python: str = sys.executable) -> Command:
    reject_duplicates(spec, OWNED)
    argv = [python, "-m", "sglang.launch_server", "--model-path", spec.model_dir]
    argv += FLAGS.argv(spec)
    if spec.ascend:
        # Seed 002: both backends are required for the Ascend-optimised paths.
        argv += ["--attention-backend", "ascend", "--sampling-backend", "ascend"]
    env: dict[str, str] = {}
    if spec.dump.tool == "sglang-tensor-dump":
        argv += ["--debug-tensor-dump-output-folder", spec.dump.dump_path]
    if spec.expert_recorder_mode is not None:
        argv += [
            "--expert-distribution-recorder-mode", spec.expert_recorder_mode,
            "--expert-distribution-recorder-buffer-size", "-1",
        ]  # fmt: skip
        if spec.dump.dump_path:
            env[RECORDER_DIR_ENV] = spec.dump.dump_path
    argv += list(spec.extra_args)
    return Command(argv=argv, env=env)
