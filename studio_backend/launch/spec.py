"""What a launch needs (engine, model, parallelism, dump settings) and how it is validated."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError

ENGINES = ("reference", "vllm", "vllm-ascend", "sglang")
DUMP_TOOLS = ("msit", "msprobe", "sglang-tensor-dump")
EXPERT_RECORDER_MODES = ("stat", "stat_approx", "per_pass", "per_token")
DTYPES = ("auto", "bfloat16", "float16", "float32")
LOOPBACK = "127.0.0.1"
# msit_llm matches layer names with a `*` wildcard only, rooted at its hard-coded `root`.
_MSIT_LAYER = re.compile(r"^root[A-Za-z0-9_.*]*$")
_API_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass
class DumpSettings:
    """Dump hooks for a launch; ``tool=None`` launches without dumping."""

    tool: str | None = None
    dump_path: str = ""
    layer_name: str = "root.model.layers.*"
    token_start: int = 0
    token_end: int = 2000  # exclusive, like seed 000's list(range(2000))
    modes: tuple[str, ...] = ("module",)
    api_list: tuple[str, ...] = ()
    statistics_mode: int = 0  # msit dump_statistics_mode: 0 tensors, 1 statistics, 2 both
    msprobe_task: str = "tensor"
    msprobe_level: str = "L0"
    ranks: tuple[int, ...] = ()

    @property
    def token_range(self) -> list[int]:
        return list(range(self.token_start, self.token_end))


@dataclass
class LaunchSpec:
    """One server launch, as chosen on the page or on the command line."""

    engine: str
    model_dir: str
    tp: int = 1
    port: int = 8017
    host: str = LOOPBACK
    max_model_len: int | None = 2000
    enforce_eager: bool = True
    dtype: str = "auto"
    extra_args: tuple[str, ...] = ()
    trust_remote_code: bool = True
    dump: DumpSettings = field(default_factory=DumpSettings)
    ascend: bool = True  # sglang: add seed 002's Ascend backends
    expert_recorder_mode: str | None = None  # sglang's expert distribution recorder
    python: str | None = None  # the engine's interpreter (None: engine_python.default_python)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | dict[str, Any]) -> LaunchSpec:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        dump = data.pop("dump", None) or {}
        for key in ("modes", "api_list", "ranks"):
            if key in dump:
                dump[key] = tuple(dump[key])
        data["extra_args"] = tuple(data.get("extra_args", ()))
        return cls(dump=DumpSettings(**dump), **data)


def check_port(port: object) -> int:
    """A TCP port a user process may bind: 1024..65535."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise InputError(f"port {port!r}", "must be an integer")
    if not 1024 <= port <= 65535:
        raise InputError(f"port {port}", "must be between 1024 and 65535")
    return port


def check_host(host: str, allow_remote: bool = False) -> str:
    """An IP address to bind; anything but loopback needs an explicit opt-in."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError as exc:
        raise InputError(f"host {host!r}", "must be an IP address such as 127.0.0.1") from exc
    if not addr.is_loopback and not allow_remote:
        raise InputError(
            f"host {host}",
            "binds beyond this machine; pass --allow-remote (page: 'reachable from other "
            "machines') if you really want that",
        )
    return host


def check_layer_pattern(pattern: str) -> str:
    """msit's layer_name: starts with `root`, only `*` as a wildcard (no regex)."""
    if not pattern.startswith("root"):
        raise InputError(f"layer pattern {pattern!r}", "must start with 'root' (msit's top name)")
    if not _MSIT_LAYER.match(pattern):
        raise InputError(
            f"layer pattern {pattern!r}",
            "msit supports dotted module names with the '*' wildcard only (no regular "
            "expressions such as [0-4]), e.g. root.model.layers.*",
        )
    return pattern


def validate(
    spec: LaunchSpec, *, allow_remote: bool = False, need_model: bool = True
) -> LaunchSpec:
    """Check every field; raise InputError naming the first bad one. Returns ``spec``."""
    if spec.engine not in ENGINES:
        raise InputError(f"engine {spec.engine!r}", f"must be one of {', '.join(ENGINES)}")
    model = Path(spec.model_dir).expanduser()
    if need_model:
        if not model.is_dir():
            raise InputError(model, "model directory does not exist")
        if not (model / "config.json").is_file():
            raise InputError(model, "has no config.json: not a Hugging Face checkpoint directory")
    spec.model_dir = str(model.resolve())
    if isinstance(spec.tp, bool) or not isinstance(spec.tp, int) or not 1 <= spec.tp <= 64:
        raise InputError(f"tp {spec.tp!r}", "must be an integer between 1 and 64")
    check_port(spec.port)
    check_host(spec.host, allow_remote)
    if spec.python is not None:
        if spec.engine == "reference":
            raise InputError("python", "the reference engine runs with the studio's interpreter")
        exe = Path(spec.python).expanduser()
        if not exe.is_file() or not os.access(exe, os.X_OK):
            raise InputError(exe, "is not an executable file (the engine's Python interpreter)")
        spec.python = str(exe)
    if spec.max_model_len is not None and spec.max_model_len < 1:
        raise InputError(f"max-model-len {spec.max_model_len}", "must be positive")
    if spec.dtype not in DTYPES:
        raise InputError(f"dtype {spec.dtype!r}", f"must be one of {', '.join(DTYPES)}")
    for arg in spec.extra_args:
        if not isinstance(arg, str) or "\x00" in arg:
            raise InputError(f"extra argument {arg!r}", "must be a plain string")
    _validate_dump(spec.dump, spec.engine)
    if spec.expert_recorder_mode is not None:
        if spec.engine != "sglang":
            raise InputError("expert distribution recorder", "is an SGLang option")
        if spec.expert_recorder_mode not in EXPERT_RECORDER_MODES:
            raise InputError(
                f"recorder mode {spec.expert_recorder_mode!r}",
                f"must be one of {', '.join(EXPERT_RECORDER_MODES)}",
            )
    return spec


def _validate_dump(dump: DumpSettings, engine: str) -> None:
    if dump.tool is None:
        return
    if dump.tool not in DUMP_TOOLS:
        raise InputError(f"dump tool {dump.tool!r}", f"must be one of {', '.join(DUMP_TOOLS)}")
    if engine == "sglang" and dump.tool != "sglang-tensor-dump":
        raise InputError(
            f"dump tool {dump.tool}", "SGLang dumps with its own tensor dump (sglang-tensor-dump)"
        )
    if engine != "sglang" and dump.tool == "sglang-tensor-dump":
        raise InputError("dump tool sglang-tensor-dump", f"works with SGLang only, not {engine}")
    if not dump.dump_path:
        raise InputError("dump path", "is required when a dump tool is chosen")
    path = Path(dump.dump_path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise InputError(path, "dump path exists and is not a directory")
    dump.dump_path = str(path)
    if not 0 <= dump.token_start < dump.token_end:
        raise InputError(
            f"token range {dump.token_start}..{dump.token_end}", "needs 0 <= start < end"
        )
    if dump.tool == "msit":
        check_layer_pattern(dump.layer_name)
        bad = [m for m in dump.modes if m not in ("module", "api")]
        if bad or not dump.modes:
            raise InputError(f"mode {list(dump.modes)}", "must be 'module', 'api' or both")
        if dump.statistics_mode not in (0, 1, 2):
            raise InputError(f"statistics mode {dump.statistics_mode}", "must be 0, 1 or 2")
    elif dump.tool == "msprobe":
        if dump.msprobe_task not in ("tensor", "statistics"):
            raise InputError(f"msprobe task {dump.msprobe_task!r}", "must be tensor or statistics")
        if dump.msprobe_level not in ("L0", "L1", "mix"):
            raise InputError(f"msprobe level {dump.msprobe_level!r}", "must be L0, L1 or mix")
    for api in dump.api_list:
        if not _API_NAME.match(api):
            raise InputError(
                f"api {api!r}", "must be a dotted name such as torch_npu.npu_kronecker_quant"
            )
    if "api" in dump.modes and dump.tool == "msit" and not dump.api_list:
        raise InputError(
            "api list", "API mode needs at least one API such as torch_npu.npu_kronecker_quant"
        )
