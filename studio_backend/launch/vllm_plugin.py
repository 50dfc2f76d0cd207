"""A vLLM general plugin (entry point group ``vllm.general_plugins``) that dumps with msit/msprobe.

Seed 000 edits vllm-ascend's worker to call msit_llm's ``register_hook`` at the end of
``compile_or_warm_up_model``, so that warm-up forwards are not dumped. This plugin does the
same without touching site-packages, for every vLLM V1 worker class: vLLM calls
:func:`register` in each of its processes; when ``STUDIO_MSIT_DUMP_CONFIG`` (msit_llm
``DumpConfig`` keyword arguments as JSON) or ``STUDIO_MSPROBE_DUMP_CONFIG`` (a msprobe
``PrecisionDebugger`` config) names a file, the worker classes below are wrapped as soon as
their modules are imported. A worker class not in the table is wrapped when vLLM's
``WorkerWrapperBase.init_worker`` creates it. Each worker prints one ``[studio-dump]`` line per
tool it hooked, a loud line when it hooked nothing, and a warning when the engine is not eager.
Without either variable the plugin does nothing.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from types import ModuleType
from typing import Any

from studio_backend.launch import vllm_dumpers
from studio_backend.launch.vllm_dumpers import say

ENV = "STUDIO_MSIT_DUMP_CONFIG"
MSPROBE_ENV = "STUDIO_MSPROBE_DUMP_CONFIG"
TRACE_ENV = "STUDIO_TRACE_MODULES_CONFIG"  # {"out_dir": ..., "steps": [0]}: studio trace modules
ANNOTATE_ENV = "STUDIO_ANNOTATE_MODULES_CONFIG"  # {"out_dir": ...}: studio profile run
TOOL_ENVS = {"msit": ENV, "msprobe": MSPROBE_ENV, "trace": TRACE_ENV, "annotate": ANNOTATE_ENV}
# module -> worker classes whose warm-up we wrap (vLLM V1 CPU/GPU/XPU workers serve both model
# runners, V1 and V2; vllm-ascend 0.23+ and older releases).
WORKER_CLASSES: dict[str, tuple[str, ...]] = {
    "vllm.v1.worker.cpu_worker": ("CPUWorker",),
    "vllm.v1.worker.gpu_worker": ("Worker",),
    "vllm.v1.worker.xpu_worker": ("XPUWorker",),
    "vllm_ascend.worker.worker": ("NPUWorker",),
    "vllm_ascend.worker.worker_v1": ("NPUWorker",),
}
WRAPPER_MODULE = "vllm.v1.worker.worker_base"  # WorkerWrapperBase.init_worker: any worker class
WORKER_MODULES = (*WORKER_CLASSES, WRAPPER_MODULE)
METHOD = "compile_or_warm_up_model"
MARK = "_studio_msit_patched"
DONE = "_studio_dump_installed"  # on a worker instance: a subclass calling super() hooks once


def load_config(path: str, key: str = "dump_path") -> dict[str, Any]:
    return vllm_dumpers.load_config(path, key)


def active_configs() -> dict[str, tuple[str, dict[str, Any]]]:
    """tool -> (config path, config) for each tool whose variable is set and readable."""
    out = {}
    for tool, env in TOOL_ENVS.items():
        path = os.environ.get(env)
        if not path:
            continue
        try:
            out[tool] = (
                path,
                load_config(path, "out_dir" if tool in ("trace", "annotate") else "dump_path"),
            )
        except (OSError, ValueError) as exc:
            say(logging.ERROR, f"cannot read {env}={path}: {exc}; {tool} dump disabled")
    return out


def patch_class(cls: type, configs: dict[str, tuple[str, dict[str, Any]]]) -> bool:
    """Wrap ``cls.compile_or_warm_up_model``; True when (already) patched."""
    original = getattr(cls, METHOD, None)
    if original is None:
        return False
    if getattr(original, MARK, False):
        return True

    @functools.wraps(original)
    def compile_or_warm_up_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)  # warm-up first: it must not be dumped
        if not getattr(self, DONE, False):
            setattr(self, DONE, True)
            try:
                vllm_dumpers.install(self, configs)
            except Exception as exc:  # noqa: BLE001 - serving goes on; the log says why
                say(
                    logging.ERROR,
                    f"!!! NOTHING HOOKED in pid {os.getpid()} ({type(self).__name__}): "
                    f"{type(exc).__name__}: {exc} !!!",
                )
        return result

    setattr(compile_or_warm_up_model, MARK, True)
    setattr(cls, METHOD, compile_or_warm_up_model)
    return True


def _patch_init_worker(module: ModuleType, configs: dict[str, tuple[str, dict[str, Any]]]) -> None:
    cls = getattr(module, "WorkerWrapperBase", None)
    original = getattr(cls, "init_worker", None)
    if original is None or getattr(original, MARK, False):
        return

    @functools.wraps(original)
    def init_worker(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        worker = getattr(self, "worker", None)
        if worker is not None:
            wcls = type(worker)
            if getattr(getattr(wcls, METHOD, None), MARK, False):
                pass  # a known class, patched when its module was imported
            elif patch_class(wcls, configs):
                say(logging.INFO, f"patched {wcls.__module__}.{wcls.__name__}.{METHOD}")
            else:
                say(
                    logging.ERROR,
                    f"!!! NOTHING HOOKED in pid {os.getpid()}: worker class "
                    f"{wcls.__module__}.{wcls.__name__} has no {METHOD} !!!",
                )
        return result

    setattr(init_worker, MARK, True)
    cls.init_worker = init_worker


def patch_worker_module(module: ModuleType, configs: dict[str, Any] | None = None) -> bool:
    """Wrap the worker classes of ``module``; True when one was (already) patched."""
    configs = active_configs() if configs is None else configs
    if module.__name__ == WRAPPER_MODULE:
        _patch_init_worker(module, configs)
        return True
    patched = False
    for name in WORKER_CLASSES.get(module.__name__, ()):
        cls = getattr(module, name, None)
        if cls is None or getattr(cls, METHOD, None) is None:
            say(logging.WARNING, f"{module.__name__} has no {name}.{METHOD}: not hooked")
            continue
        already = getattr(getattr(cls, METHOD), MARK, False)
        patched = patch_class(cls, configs) or patched
        if not already:
            say(logging.INFO, f"patched {module.__name__}.{name}.{METHOD}")
    return patched


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, configs: dict[str, Any]) -> None:
        self.inner = inner
        self.configs = configs

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        patch_worker_module(module, self.configs)


class WorkerFinder(importlib.abc.MetaPathFinder):
    """Patches a worker module right after it is imported (whenever that happens)."""

    def __init__(self, configs: dict[str, Any]) -> None:
        self.configs = configs

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in WORKER_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, self.configs)
                return spec
        return None


def register() -> None:
    """The entry point vLLM calls in each of its processes (may be called several times)."""
    configs = active_configs()
    if not configs:
        return
    for name in WORKER_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            patch_worker_module(module, configs)
    if not any(isinstance(f, WorkerFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, WorkerFinder(configs))
