"""``vllm serve`` on Ascend with dump hooks and no edits to site-packages.

msprobe: vllm-ascend reads a PrecisionDebugger config through
``--additional-config '{"dump_config_path": ...}'``. msit: the studio's vLLM general plugin
(``studio_backend.launch.vllm_plugin``) reads the JSON named by ``STUDIO_MSIT_DUMP_CONFIG`` and registers
msit's hooks after the worker's warm-up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from studio_backend.launch.commands import Command, ServingFlags, reject_duplicates
from studio_backend.launch.spec import DumpSettings, LaunchSpec

MSIT_ENV = "STUDIO_MSIT_DUMP_CONFIG"
# msprobe first: vllm-ascend's own hook (no plugin, no site-packages edits); msit's llm dump
# component is retired upstream in favour of msprobe (REFERENCE.md section 1).
DEFAULT_DUMP_TOOL = "msprobe"
# The vLLM serving flags the studio owns (the same for vLLM and vLLM-Ascend).
FLAGS = ServingFlags(
    tp="--tensor-parallel-size", max_model_len="--max-model-len", enforce_eager="--enforce-eager"
)
OWNED = FLAGS.owned("-tp", "--additional-config")


def msit_config(dump: DumpSettings) -> dict[str, object]:
    """Keyword arguments for msit_llm.DumpConfig, as the plugin passes them."""
    cfg: dict[str, object] = {
        "dump_path": dump.dump_path,
        "token_range": dump.token_range,
        "layer_name": dump.layer_name,
        "mode": list(dump.modes),
    }
    if dump.api_list:
        cfg["api_list"] = list(dump.api_list)  # dotted names, resolved in the worker
    if dump.statistics_mode:
        cfg["dump_statistics_mode"] = dump.statistics_mode
    return cfg


def msprobe_config(dump: DumpSettings) -> dict[str, object]:
    """A PrecisionDebugger config (REFERENCE.md 1, msprobe)."""
    return {
        "task": dump.msprobe_task,
        "dump_path": dump.dump_path,
        "rank": list(dump.ranks),
        "step": dump.token_range,
        "level": dump.msprobe_level,
        "tensor": {"scope": [], "list": list(dump.api_list), "data_mode": ["all"]},
        "statistics": {"scope": [], "list": list(dump.api_list), "data_mode": ["all"]},
    }


def build(spec: LaunchSpec, config_dir: Path, python: str = sys.executable) -> Command:
    """``vllm serve`` run by ``python``: the interpreter that also sees the studio's plugin."""
    reject_duplicates(spec, OWNED)
    argv = [python, "-m", "vllm.entrypoints.cli.main", "serve", spec.model_dir]
    argv += FLAGS.argv(spec)
    env: dict[str, str] = {}
    files: dict[str, str] = {}
    dump = spec.dump
    if dump.tool == "msprobe":
        path = str(Path(config_dir) / "msprobe_config.json")
        files[path] = json.dumps(msprobe_config(dump), indent=2)
        argv += ["--additional-config", json.dumps({"dump_config_path": path})]
    elif dump.tool == "msit":
        path = str(Path(config_dir) / "msit_config.json")
        files[path] = json.dumps(msit_config(dump), indent=2)
        env[MSIT_ENV] = path
    argv += list(spec.extra_args)
    return Command(argv=argv, env=env, files=files)
