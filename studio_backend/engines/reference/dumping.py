"""Activation dumps with the real tools, installed after warm-up (seed 000).

msit_llm: ``DumpConfig`` + ``register_hook`` on the model, exactly what the vLLM-Ascend worker
patch does. msprobe: ``PrecisionDebugger`` with a JSON config, started and stopped around every
step (JSON files are written at ``stop()``). Options mirror msit's. Into the dump root we add
``ranks.json`` (rank folder -> rank: on CPU msit names folders ``cpu_<pid>``) and a copy of the
model's ``config.json`` so dumps describe themselves; readers treat both as optional.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from studio_backend.engines.reference import kronecker
from studio_backend.engines.reference.dump_tools import TOOLS
from studio_backend.engines.reference.runner import ModelRunner
from studio_backend.errors import InputError, StudioError


@dataclass
class DumpOptions:
    """What to dump (msit's DumpConfig options; msprobe gets the closest equivalents)."""

    tool: str = "msit"
    dump_path: str | Path = "dumps"
    token_range: list[int] = field(default_factory=lambda: [0])
    layer_name: str | None = None  # msit rule: only '*' is a wildcard, names start with 'root'
    mode: list[str] = field(default_factory=lambda: ["module"])  # module and/or api
    api_list: list[str] = field(default_factory=list)  # e.g. ["npu_kronecker_quant"]
    tensor_part: int = 2  # 0 inputs, 1 outputs, 2 both
    dump_statistics_mode: int = 0  # 0 tensors, 1 statistics.csv only, 2 both
    kronecker: bool = False  # FusedMoE calls npu_kronecker_quant (for api-mode dumps)

    def check(self) -> None:
        if self.tool not in TOOLS:
            raise InputError(self.tool, f"unknown dump tool (choose from {', '.join(TOOLS)})")
        if not set(self.mode) <= {"module", "api"} or not self.mode:
            raise InputError(self.mode, "mode must be a non-empty subset of module, api")
        if self.tensor_part not in (0, 1, 2):
            raise InputError(self.tensor_part, "tensor_part must be 0, 1 or 2")
        if self.dump_statistics_mode not in (0, 1, 2):
            raise InputError(self.dump_statistics_mode, "dump_statistics_mode must be 0, 1 or 2")


def _gather(obj: Any) -> list[Any]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _describe(root: Path, ranks: dict[str, int], model_dir: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "ranks.json").write_text(json.dumps(ranks, indent=2, sort_keys=True))
    shutil.copyfile(model_dir / "config.json", root / "config.json")


def install_msit(runner: ModelRunner, opts: DumpOptions, rank: int) -> Path:
    try:
        from msit_llm import DumpConfig, register_hook
        from msit_llm.dump.torch_dump import hook_ops
    except ImportError as exc:
        raise StudioError(f"msit_llm is not importable ({exc}); run `make install`") from exc
    apis: list[Any] = []
    if "api" in opts.mode:
        # What the seed's hook_ops.py patch does for torch_npu: make the op hookable.
        hook_ops.HOOK_OPS[kronecker] = ["npu_kronecker_quant"]
        apis = [getattr(kronecker, a) for a in opts.api_list if hasattr(kronecker, a)]
    Path(opts.dump_path).mkdir(parents=True, exist_ok=True)
    # msit all-reduces its msit_dump_<timestamp> over ranks only when torchrun's variables say
    # there are several ranks; without them ranks a second apart write separate sessions.
    if dist.is_initialized():
        os.environ["LOCAL_WORLD_SIZE"] = str(dist.get_world_size())
        os.environ["LOCAL_RANK"] = str(rank)
    cfg = DumpConfig(
        dump_path=str(opts.dump_path),
        token_range=list(opts.token_range),
        layer_name=opts.layer_name,
        mode=list(opts.mode),
        api_list=apis,
        tensor_part=opts.tensor_part,
        dump_statistics_mode=opts.dump_statistics_mode,
    )
    register_hook(runner.model, cfg)  # collective: msit agrees on one timestamp across ranks
    rank_dir = Path(cfg.dump_dir)
    folders = _gather((rank_dir.name, rank))
    root = rank_dir.parent.parent  # <dump_path>/msit_dump_<ts>/torch_tensors/<dev>_<pid>
    if rank == 0:
        _describe(root, dict(folders), runner.model_dir)
    return root


def install_msprobe(runner: ModelRunner, opts: DumpOptions, rank: int) -> Path:
    try:
        from msprobe.pytorch import PrecisionDebugger
    except ImportError as exc:
        raise StudioError(f"msprobe is not importable ({exc}); run `make install`") from exc
    levels = {("module",): "L0", ("api",): "L1"}
    level = levels.get(tuple(sorted(set(opts.mode))), "mix")
    data_mode = {0: ["input"], 1: ["output"], 2: ["all"]}[opts.tensor_part]
    task = "statistics" if opts.dump_statistics_mode == 1 else "tensor"
    root = Path(opts.dump_path).resolve()
    config = {
        "task": task,
        "dump_path": str(root),
        "rank": [],
        "step": list(opts.token_range),
        "level": level,
        task: {"scope": [], "list": [], "data_mode": data_mode},
    }
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    debugger = PrecisionDebugger(config_path=f.name)
    Path(f.name).unlink()
    model = runner.model
    wanted = set(opts.token_range)

    def before(step: int) -> None:
        if step in wanted:
            debugger.start(model=model)

    def after(step: int) -> None:
        if step in wanted:
            debugger.stop()
        debugger.step()

    runner.before_step, runner.after_step = before, after
    folders = _gather((f"rank{rank}", rank))
    if rank == 0:
        _describe(root, dict(folders), runner.model_dir)
    return root


def install(runner: ModelRunner, opts: DumpOptions, rank: int) -> Path:
    """Install the dump hooks (after warm-up) and return the dump root."""
    opts.check()
    if opts.tool == "msit":
        return install_msit(runner, opts, rank)
    return install_msprobe(runner, opts, rank)
