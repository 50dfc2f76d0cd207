"""A vLLM general plugin (entry point group ``vllm.general_plugins``) that dumps with msit.

Seed 000 edits vllm-ascend's worker to call msit_llm's ``register_hook`` at the end of
``compile_or_warm_up_model``, so that warm-up forwards are not dumped. This plugin does the
same without touching site-packages: vLLM calls :func:`register` in every process it starts;
when ``STUDIO_MSIT_DUMP_CONFIG`` names the studio's dump configuration (JSON with
``msit_llm.DumpConfig`` keyword arguments), the NPU worker class is wrapped as soon as its
module is imported: ``vllm_ascend.worker.worker`` (0.23 and later) or
``vllm_ascend.worker.worker_v1`` (older releases). Without the variable it does nothing.
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.machinery
import inspect
import json
import logging
import os
import sys
from types import ModuleType
from typing import Any

ENV = "STUDIO_MSIT_DUMP_CONFIG"
WORKER_MODULES = ("vllm_ascend.worker.worker", "vllm_ascend.worker.worker_v1")
WORKER_CLASS = "NPUWorker"
METHOD = "compile_or_warm_up_model"
MARK = "_studio_msit_patched"

log = logging.getLogger("studio.vllm_plugin")


def _say(level: int, msg: str) -> None:
    # vLLM's worker processes may not propagate our logger: also print to the server log.
    log.log(level, msg)
    print(f"[studio-dump] {msg}", file=sys.stderr, flush=True)


def load_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if not isinstance(cfg, dict) or "dump_path" not in cfg:
        raise ValueError(f"{path}: expected a JSON object with dump_path")
    return cfg


def resolve_api(name: str) -> Any:
    """``torch_npu.npu_kronecker_quant`` -> the function object msit wraps."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def dump_config_kwargs(cfg: dict[str, Any], accepted: set[str] | None) -> dict[str, Any]:
    """DumpConfig keyword arguments: APIs resolved, keys this msit version lacks dropped."""
    kwargs = dict(cfg)
    if kwargs.get("api_list"):
        kwargs["api_list"] = [resolve_api(n) for n in kwargs["api_list"]]
    if accepted is not None:
        dropped = sorted(set(kwargs) - accepted)
        if dropped:
            _say(logging.WARNING, f"this msit_llm's DumpConfig ignores {', '.join(dropped)}")
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return kwargs


def _accepted_params(cls: type) -> set[str] | None:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def _model_of(worker: Any) -> Any:
    runner = getattr(worker, "model_runner", None)
    model = getattr(runner, "model", None)
    if model is None and hasattr(worker, "get_model"):
        model = worker.get_model()
    if model is None:
        raise RuntimeError("the worker has no model_runner.model")
    return model


def register_hooks(worker: Any, cfg: dict[str, Any]) -> None:
    """What seed 000 adds to the worker: msit's hooks on the loaded model."""
    from msit_llm import DumpConfig, register_hook

    model = _model_of(worker)
    dump_config = DumpConfig(**dump_config_kwargs(cfg, _accepted_params(DumpConfig)))
    register_hook(model, dump_config)
    _say(
        logging.INFO,
        f"msit dump hooks registered on {type(model).__name__} after warm-up "
        f"(pid {os.getpid()}, layers {cfg.get('layer_name')}, dump_path {cfg['dump_path']})",
    )


def patch_worker_module(module: ModuleType, cfg: dict[str, Any]) -> bool:
    """Wrap ``NPUWorker.compile_or_warm_up_model`` in ``module``; True when (already) patched."""
    cls = getattr(module, WORKER_CLASS, None)
    original = getattr(cls, METHOD, None) if cls is not None else None
    if original is None:
        _say(
            logging.WARNING,
            f"{module.__name__} has no {WORKER_CLASS}.{METHOD}: msit dump not hooked",
        )
        return False
    if getattr(original, MARK, False):
        return True

    @functools.wraps(original)
    def compile_or_warm_up_model(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)  # warm-up first: it must not be dumped
        try:
            register_hooks(self, cfg)
        except Exception as exc:  # noqa: BLE001 - serving goes on; the log says why nothing dumps
            _say(logging.ERROR, f"msit dump hooks NOT registered: {type(exc).__name__}: {exc}")
        return result

    setattr(compile_or_warm_up_model, MARK, True)
    setattr(cls, METHOD, compile_or_warm_up_model)
    _say(logging.INFO, f"patched {module.__name__}.{WORKER_CLASS}.{METHOD}")
    return True


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader, cfg: dict[str, Any]) -> None:
        self.inner = inner
        self.cfg = cfg

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        patch_worker_module(module, self.cfg)


class WorkerFinder(importlib.abc.MetaPathFinder):
    """Patches the worker module right after it is imported (whenever that happens)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in WORKER_MODULES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, self.cfg)
                return spec
        return None


def register() -> None:
    """The entry point vLLM calls in each of its processes (may be called several times)."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        cfg = load_config(path)
    except (OSError, ValueError) as exc:
        _say(logging.ERROR, f"cannot read {ENV}={path}: {exc}; msit dump disabled")
        return
    for name in WORKER_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            patch_worker_module(module, cfg)
    if not any(isinstance(f, WorkerFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, WorkerFinder(cfg))
