"""Command lines for each engine: argument LISTS (never shell strings) plus environment and files."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from studio_backend.errors import InputError
from studio_backend.launch.spec import LaunchSpec


@dataclass
class Command:
    """What to run: ``argv`` as a list, extra environment, and config files to write first."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # absolute path -> content

    def shell_text(self) -> str:
        """A copyable POSIX shell rendering (for display only: launches never use a shell)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        cmd = shlex.join(self.argv)
        return f"{env} {cmd}" if env else cmd

    def write_files(self) -> None:
        for path, content in self.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(content, encoding="utf-8")

    def to_json(self) -> str:
        return json.dumps({"argv": self.argv, "env": self.env, "files": sorted(self.files)})


def reject_duplicates(spec: LaunchSpec, owned: tuple[str, ...]) -> None:
    """Extra arguments may not repeat flags the form sets itself (one source of truth)."""
    for arg in spec.extra_args:
        flag = arg.split("=", 1)[0]
        if flag in owned:
            raise InputError(f"extra argument {arg}", "is set by the form; change it there")


@dataclass(frozen=True)
class ServingFlags:
    """One engine's flag for each serving setting of the form: the argv it gets and the flags
    the form owns come from this one table, so they cannot drift apart."""

    tp: str
    max_model_len: str
    enforce_eager: str
    host: str = "--host"
    port: str = "--port"
    dtype: str = "--dtype"
    trust_remote_code: str = "--trust-remote-code"

    def argv(self, spec: LaunchSpec) -> list[str]:
        argv = [self.host, spec.host, self.port, str(spec.port), self.tp, str(spec.tp),
                self.dtype, spec.dtype]  # fmt: skip
        if spec.max_model_len is not None:
            argv += [self.max_model_len, str(spec.max_model_len)]
        if spec.trust_remote_code:
            argv.append(self.trust_remote_code)
        if spec.enforce_eager:
            argv.append(self.enforce_eager)
        return argv

    def owned(self, *more: str) -> tuple[str, ...]:
        """These flags and ``more`` (the engine's other form-set flags and their aliases)."""
        return (self.host, self.port, self.tp, self.dtype, self.max_model_len,
                self.trust_remote_code, self.enforce_eager, *more)  # fmt: skip


def build(spec: LaunchSpec, config_dir: Path) -> Command:
    """The command for ``spec.engine``; config files go under ``config_dir``."""
    if spec.engine == "reference":
        from studio_backend.launch.commands import reference

        return reference.build(spec)
    if spec.engine == "vllm":
        from studio_backend.launch.commands import vllm

        return vllm.build(spec, config_dir)
    from studio_backend.launch.engine_python import default_python

    python = spec.python or default_python(spec.engine)
    if spec.engine == "vllm-ascend":
        from studio_backend.launch.commands import vllm_ascend

        return vllm_ascend.build(spec, config_dir, python)
    from studio_backend.launch.commands import sglang

    return sglang.build(spec, python)
