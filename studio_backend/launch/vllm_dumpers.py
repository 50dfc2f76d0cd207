"""What the studio's vLLM plugin does in a worker after warm-up: msit and/or msprobe hooks.

Runs inside vLLM's worker processes (CPU, GPU or Ascend), so it imports only the standard
library at module level; torch, msit_llm, msprobe and vLLM are imported when a worker asks.
Every rank goes through the same collectives (timestamp agreement, folder gathering) whether
its own hooks could be installed or not, so that one failing rank never hangs the others.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("studio.vllm_plugin")
PREFIX = "[studio-dump]"
NOUNS = {
    "msit": "msit dump hooks",
    "msprobe": "msprobe PrecisionDebugger",
    "trace": "module call tracer",
    "annotate": "module annotations for the profiler",
}


def say(level: int, msg: str) -> None:
    """Log and print: vLLM's worker processes may not propagate our logger."""
    log.log(level, msg)
    print(f"{PREFIX} {msg}", file=sys.stderr, flush=True)


def load_config(path: str, key: str = "dump_path") -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    if not isinstance(cfg, dict) or key not in cfg:
        raise ValueError(f"{path}: expected a JSON object with {key}")
    return cfg


def resolve_api(name: str) -> Any:
    """``torch_npu.npu_kronecker_quant`` -> the function object msit wraps."""
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _accepted_params(cls: type) -> set[str] | None:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def dump_config_kwargs(cfg: dict[str, Any], accepted: set[str] | None) -> dict[str, Any]:
    """DumpConfig keyword arguments: APIs resolved, keys this msit version lacks dropped."""
    kwargs = dict(cfg)
    if kwargs.get("api_list"):
        kwargs["api_list"] = [resolve_api(n) for n in kwargs["api_list"]]
    if accepted is not None:
        dropped = sorted(set(kwargs) - accepted)
        if dropped:
            say(logging.WARNING, f"this msit_llm's DumpConfig ignores {', '.join(dropped)}")
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return kwargs


def model_of(worker: Any) -> Any:
    """The worker's nn.Module: ``get_model()`` unwraps graph wrappers (V1 and V2 runners)."""
    model = None
    if hasattr(worker, "get_model"):
        try:
            model = worker.get_model()
        except Exception:  # noqa: BLE001 - fall back to the runner's attribute
            model = None
    if model is None:
        model = getattr(getattr(worker, "model_runner", None), "model", None)
    if model is None:
        raise RuntimeError("the worker has no model (get_model() and model_runner.model)")
    return model


def rank_of(worker: Any) -> int:
    rank = getattr(worker, "rank", None)
    if isinstance(rank, int):
        return rank
    dist = _dist()
    return dist.get_rank() if dist is not None else 0


def _dist() -> Any:
    """torch.distributed when it is initialized with several ranks, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    return dist


def _cpu_group() -> Any:
    # vLLM's world group has a gloo twin: object collectives need no accelerator there.
    try:
        from vllm.distributed.parallel_state import get_world_group

        return get_world_group().cpu_group
    except Exception:  # noqa: BLE001 - not vLLM, or its groups are not set up
        return None


def gather(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order (just ``[obj]`` without several ranks)."""
    dist = _dist()
    if dist is None:
        return [obj]
    group = _cpu_group()
    out: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def is_eager(worker: Any) -> bool | None:
    cfg = getattr(worker, "model_config", None)
    eager = getattr(cfg, "enforce_eager", None)
    return eager if isinstance(eager, bool) else None


@dataclass
class Installed:
    """What one worker hooked: tool -> (dump root, this rank's folder name under it)."""

    rank: int
    roots: dict[str, tuple[str, str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def _agree_msit_session() -> None:
    """One ``msit_dump_<timestamp>`` for all ranks: msit agrees only under torchrun's env."""
    stamp = max(gather(int(time.time())))
    try:
        import msit_llm.common.constant as const
    except ImportError:
        return
    if getattr(const, "GLOBAL_AIT_DUMP_PATH", None) == "msit_dump":
        const.GLOBAL_AIT_DUMP_PATH = "msit_dump_" + time.strftime(
            "%Y%m%d_%H%M%S", time.localtime(stamp)
        )


def install_msit(model: Any, cfg: dict[str, Any]) -> tuple[str, str]:
    """What seed 000 adds to the worker: msit's hooks on the loaded model."""
    from msit_llm import DumpConfig, register_hook

    dump_config = DumpConfig(**dump_config_kwargs(cfg, _accepted_params(DumpConfig)))
    register_hook(model, dump_config)
    rank_dir = Path(getattr(dump_config, "dump_dir", "") or cfg["dump_path"])
    # <dump_path>/msit_dump_<ts>/torch_tensors/<device>_<pid>
    root = rank_dir.parent.parent if rank_dir.parent.name == "torch_tensors" else rank_dir
    return str(root), rank_dir.name


def install_msprobe(model: Any, cfg_path: str, cfg: dict[str, Any], rank: int) -> tuple[str, str]:
    """msprobe's PrecisionDebugger, started and stopped around every forward of the model."""
    from msprobe.pytorch import PrecisionDebugger

    debugger = PrecisionDebugger(config_path=cfg_path)
    wanted = set(cfg.get("step") or [])
    state = {"step": 0}

    def before(module: Any, args: Any) -> None:
        if not wanted or state["step"] in wanted:
            debugger.start(model=model)

    def after(module: Any, args: Any, output: Any) -> None:
        if not wanted or state["step"] in wanted:
            debugger.stop()
        debugger.step()
        state["step"] += 1

    model.register_forward_pre_hook(before, prepend=True)
    model.register_forward_hook(after)
    return str(Path(cfg["dump_path"]).resolve()), f"rank{rank}"


def install_trace(model: Any, cfg: dict[str, Any], rank: int) -> tuple[str, str]:
    """Seed 003's module call trace of the wanted forward steps (``studio trace modules
    --engine vllm``): ``<out_dir>/calls_rank<R>_step<S>.pt``, a list of ModuleCall dicts."""
    from dataclasses import asdict

    import torch

    from studio_backend.trace.module_tracer import ModuleTracer

    out = Path(cfg["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    wanted = sorted(set(cfg.get("steps") or [0]))
    state = {"step": 0}
    tracer = ModuleTracer(model, rank=rank)

    def before(module: Any, args: Any) -> None:
        tracer.calls = []  # one step per file; seq and parents count from this step's root

    def after(module: Any, args: Any, output: Any) -> None:
        step = state["step"]
        state["step"] += 1
        if step in wanted:
            calls = [asdict(c) for c in tracer.calls]
            torch.save(calls, out / f"calls_rank{rank}_step{step}.pt")
        if state["step"] > wanted[-1]:
            tracer.__exit__(None, None, None)  # nothing more to record: hooks off
            pre.remove()
            post.remove()

    # The step hooks wrap the tracer's own: registered first (pre) and last (post).
    pre = model.register_forward_pre_hook(before, prepend=True)
    tracer.__enter__()
    post = model.register_forward_hook(after)
    return str(out), f"calls_rank{rank}"


def install_annotate(model: Any, cfg: dict[str, Any], rank: int) -> tuple[str, str]:
    """Every module call inside ``record_function(<module path>)``, so that a torch profile
    taken meanwhile (vLLM's ``--profiler-config``, ``/start_profile``) attributes each op and
    kernel to its module (``studio profile run --engine vllm``)."""
    from studio_backend.trace.module_tracer import ModuleTracer

    tracer = ModuleTracer(model, annotate=True, rank=rank)

    def forget(module: Any, args: Any) -> None:
        tracer.calls = []  # annotations only: keep no call list across steps

    model.register_forward_pre_hook(forget, prepend=True)
    tracer.__enter__()
    return str(cfg["out_dir"]), f"annotations_rank{rank}"


def _describe(installed: list[Installed], model_dir: str | None) -> None:
    """ranks.json (folder -> rank) and config.json in each dump root: the dump describes itself."""
    roots: dict[str, dict[str, int]] = {}
    for item in installed:
        for tool, (root, folder) in item.roots.items():
            if tool in ("msit", "msprobe"):
                roots.setdefault(root, {})[folder] = item.rank
    for root, ranks in roots.items():
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        (path / "ranks.json").write_text(json.dumps(ranks, indent=2, sort_keys=True))
        config = Path(model_dir or "") / "config.json"
        if model_dir and config.is_file():
            shutil.copyfile(config, path / "config.json")


def install(worker: Any, configs: dict[str, tuple[str, dict[str, Any]]]) -> Installed:
    """Install every configured tool on ``worker`` (tool -> (config path, config))."""
    rank = rank_of(worker)
    done = Installed(rank=rank)
    if "msit" in configs:
        _agree_msit_session()  # collective: before anything that may fail on one rank
    try:
        model = model_of(worker)
    except Exception as exc:  # noqa: BLE001 - reported; the other ranks still gather
        model = None
        done.errors = {tool: f"{type(exc).__name__}: {exc}" for tool in configs}
    if model is not None:
        for tool, (path, cfg) in configs.items():
            try:
                if tool == "msit":
                    done.roots[tool] = install_msit(model, cfg)
                elif tool == "trace":
                    done.roots[tool] = install_trace(model, cfg, rank)
                elif tool == "annotate":
                    done.roots[tool] = install_annotate(model, cfg, rank)
                else:
                    done.roots[tool] = install_msprobe(model, path, cfg, rank)
            except Exception as exc:  # noqa: BLE001 - serving goes on; the log says why
                done.errors[tool] = f"{type(exc).__name__}: {exc}"
    everyone = gather(done)
    if rank == min(item.rank for item in everyone):
        model_cfg = getattr(worker, "model_config", None)
        model_dir = getattr(model_cfg, "model", None)
        try:
            _describe(everyone, model_dir if isinstance(model_dir, str) else None)
        except OSError as exc:
            say(logging.WARNING, f"could not write ranks.json/config.json: {exc}")
    _report(worker, model, done)
    return done


def _report(worker: Any, model: Any, done: Installed) -> None:
    who = f"rank {done.rank} (pid {os.getpid()}, {type(worker).__name__})"
    if is_eager(worker) is False:
        say(
            logging.WARNING,
            f"{who}: the engine is NOT eager: compiled graphs bypass module hooks, so the "
            "dump will hold model_tree.json and no step folders; launch with --enforce-eager",
        )
    for tool, (root, folder) in done.roots.items():
        noun = NOUNS[tool]
        say(
            logging.INFO,
            f"{who}: {noun} registered on {type(model).__name__} after warm-up; "
            f"writes {root} ({folder})",
        )
    for tool, why in done.errors.items():
        noun = NOUNS[tool]
        say(logging.ERROR, f"{who}: {noun} NOT registered: {why}")
    if not done.roots:
        say(logging.ERROR, f"!!! {who}: NOTHING HOOKED: this worker writes no dump !!!")
