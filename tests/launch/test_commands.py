"""Exact command lines for each engine, and validation of what goes into them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio_backend.errors import InputError
from studio_backend.launch.commands import reference, sglang, vllm_ascend
from studio_backend.launch.spec import DumpSettings, LaunchSpec, validate


@pytest.fixture
def model(tmp_path: Path) -> Path:
    d = tmp_path / "Qwen3-30B"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def test_vllm_ascend_plain(model: Path, tmp_path: Path) -> None:
    spec = validate(LaunchSpec("vllm-ascend", str(model), tp=4, port=8017))
    cmd = vllm_ascend.build(spec, tmp_path / "cfg", python="python3")
    assert cmd.argv == [
        "python3", "-m", "vllm.entrypoints.cli.main", "serve", str(model), "--host", "127.0.0.1", "--port", "8017",
        "--tensor-parallel-size", "4", "--dtype", "auto", "--max-model-len", "2000",
        "--trust-remote-code", "--enforce-eager",
    ]  # fmt: skip
    assert cmd.env == {} and cmd.files == {}


def test_vllm_ascend_msprobe_additional_config(model: Path, tmp_path: Path) -> None:
    dump = DumpSettings(tool="msprobe", dump_path=str(tmp_path / "d"), token_start=0, token_end=3)
    spec = validate(LaunchSpec("vllm-ascend", str(model), tp=2, port=9000, dump=dump))
    cmd = vllm_ascend.build(spec, tmp_path / "cfg", python="python3")
    cfg_path = str(tmp_path / "cfg" / "msprobe_config.json")
    assert cmd.argv[-2:] == ["--additional-config", json.dumps({"dump_config_path": cfg_path})]
    assert cmd.argv[-2:] == ["--additional-config", f'{{"dump_config_path": "{cfg_path}"}}']
    assert json.loads(cmd.files[cfg_path]) == {
        "task": "tensor",
        "dump_path": str(tmp_path / "d"),
        "rank": [],
        "step": [0, 1, 2],
        "level": "L0",
        "tensor": {"scope": [], "list": [], "data_mode": ["all"]},
        "statistics": {"scope": [], "list": [], "data_mode": ["all"]},
    }
    assert cmd.env == {}


def test_vllm_ascend_msit_plugin_env(model: Path, tmp_path: Path) -> None:
    dump = DumpSettings(
        tool="msit",
        dump_path=str(tmp_path / "d"),
        layer_name="root.model.layers.*",
        token_end=2,
        modes=("module", "api"),
        api_list=("torch_npu.npu_kronecker_quant",),
        statistics_mode=2,
    )
    spec = validate(
        LaunchSpec("vllm-ascend", str(model), tp=1, port=8100, max_model_len=None,
                   enforce_eager=False, dtype="bfloat16", extra_args=("--seed", "7"), dump=dump)
    )  # fmt: skip
    cmd = vllm_ascend.build(spec, tmp_path / "cfg", python="python3")
    assert cmd.argv == [
        "python3", "-m", "vllm.entrypoints.cli.main", "serve", str(model), "--host", "127.0.0.1", "--port", "8100",
        "--tensor-parallel-size", "1", "--dtype", "bfloat16", "--trust-remote-code",
        "--seed", "7",
    ]  # fmt: skip
    cfg_path = str(tmp_path / "cfg" / "msit_config.json")
    assert cmd.env == {"STUDIO_MSIT_DUMP_CONFIG": cfg_path}
    assert json.loads(cmd.files[cfg_path]) == {
        "dump_path": str(tmp_path / "d"),
        "token_range": [0, 1],
        "layer_name": "root.model.layers.*",
        "mode": ["module", "api"],
        "api_list": ["torch_npu.npu_kronecker_quant"],
        "dump_statistics_mode": 2,
    }
    assert cmd.shell_text().startswith(
        f"STUDIO_MSIT_DUMP_CONFIG={cfg_path} python3 -m vllm.entrypoints.cli.main serve "
    )


def test_sglang_seed_002_flags(model: Path) -> None:
    spec = validate(
        LaunchSpec("sglang", str(model), tp=1, port=30000, dtype="float16", max_model_len=4096,
                   extra_args=("--mem-fraction-static", "0.9", "--cuda-graph-bs", "1", "2"),
                   enforce_eager=False)
    )  # fmt: skip
    cmd = sglang.build(spec, python="python3")
    assert cmd.argv == [
        "python3", "-m", "sglang.launch_server", "--model-path", str(model),
        "--host", "127.0.0.1", "--port", "30000", "--tp-size", "1", "--dtype", "float16",
        "--context-length", "4096", "--trust-remote-code",
        "--attention-backend", "ascend", "--sampling-backend", "ascend",
        "--mem-fraction-static", "0.9", "--cuda-graph-bs", "1", "2",
    ]  # fmt: skip


def test_sglang_dump_and_expert_recorder(model: Path, tmp_path: Path) -> None:
    dump = DumpSettings(tool="sglang-tensor-dump", dump_path=str(tmp_path / "sg"))
    spec = validate(
        LaunchSpec("sglang", str(model), tp=2, port=30001, ascend=False,
                   expert_recorder_mode="stat", dump=dump)
    )  # fmt: skip
    cmd = sglang.build(spec, python="py")
    assert cmd.argv == [
        "py", "-m", "sglang.launch_server", "--model-path", str(model),
        "--host", "127.0.0.1", "--port", "30001", "--tp-size", "2", "--dtype", "auto",
        "--context-length", "2000", "--trust-remote-code", "--disable-cuda-graph",
        "--debug-tensor-dump-output-folder", str(tmp_path / "sg"),
        "--expert-distribution-recorder-mode", "stat",
        "--expert-distribution-recorder-buffer-size", "-1",
    ]  # fmt: skip
    assert cmd.env == {"SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR": str(tmp_path / "sg")}


def test_sglang_ascend_and_eager(model: Path) -> None:
    spec = validate(LaunchSpec("sglang", str(model), tp=1, port=30002, enforce_eager=True))
    assert sglang.build(spec, python="py").argv == [
        "py", "-m", "sglang.launch_server", "--model-path", str(model),
        "--host", "127.0.0.1", "--port", "30002", "--tp-size", "1", "--dtype", "auto",
        "--context-length", "2000", "--trust-remote-code", "--disable-cuda-graph",
        "--attention-backend", "ascend", "--sampling-backend", "ascend",
    ]  # fmt: skip


@pytest.mark.parametrize(("engine", "module"), [("sglang", sglang), ("vllm-ascend", vllm_ascend)])
def test_every_serving_flag_is_owned(model: Path, engine: str, module) -> None:
    """The form's flags cannot be repeated in the extra arguments, each one of them."""
    spec = validate(LaunchSpec(engine, str(model), max_model_len=64, enforce_eager=True))
    flags = [a for a in module.FLAGS.argv(spec) if a.startswith("--")]
    assert len(flags) == 7
    for flag in flags:
        with pytest.raises(InputError, match="set by the form"):
            module.build(validate(LaunchSpec(engine, str(model), extra_args=(f"{flag}=1",))),
                         *((Path("cfg"),) if module is vllm_ascend else ()))  # fmt: skip


def test_reference_command(model: Path, tmp_path: Path) -> None:
    dump = DumpSettings(tool="msit", dump_path=str(tmp_path / "d"), token_end=4,
                        modes=("module", "api"), api_list=("torch_npu.npu_kronecker_quant",),
                        statistics_mode=2)  # fmt: skip
    spec = validate(LaunchSpec("reference", str(model), tp=2, port=8020, dump=dump))
    cmd = reference.build(spec, python="py")
    assert cmd.argv == [
        "py", "-m", "studio_backend.cli", "serve-reference", "--model", str(model), "--tp", "2",
        "--port", "8020", "--host", "127.0.0.1", "--dump-tool", "msit",
        "--dump-path", str(tmp_path / "d"), "--token-range", "0-3",
        "--layer-name", "root.model.layers.*", "--dump-mode", "module,api",
        "--api-list", "npu_kronecker_quant", "--dump-statistics-mode", "2",
    ]  # fmt: skip
    spec.dump = DumpSettings(
        tool="msprobe", dump_path=str(tmp_path / "d"), token_start=1, token_end=2
    )
    assert reference.build(validate(spec), python="py").argv[-6:] == [
        "--dump-tool", "msprobe", "--dump-path", str(tmp_path / "d"), "--token-range", "1-1",
    ]  # fmt: skip
    spec.dump = DumpSettings()
    assert reference.build(validate(spec), python="py").argv[-1] == "127.0.0.1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"port": 80}, "between 1024 and 65535"),
        ({"port": "8000"}, "must be an integer"),
        ({"host": "0.0.0.0"}, "--allow-remote"),
        ({"host": "localhost; rm -rf /"}, "must be an IP address"),
        ({"tp": 0}, "between 1 and 64"),
        ({"engine": "trt"}, "must be one of"),
        ({"dtype": "int3"}, "must be one of"),
        ({"extra_args": ("--port=1",)}, "set by the form"),
    ],
)
def test_bad_specs_rejected(model: Path, tmp_path: Path, change: dict, message: str) -> None:
    spec = LaunchSpec("vllm-ascend", str(model))
    for k, v in change.items():
        setattr(spec, k, v)
    with pytest.raises(InputError, match=message):
        vllm_ascend.build(validate(spec), tmp_path, python="python3")


def test_remote_host_needs_opt_in(model: Path) -> None:
    spec = validate(LaunchSpec("reference", str(model), host="0.0.0.0"), allow_remote=True)
    assert spec.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("dump", "message"),
    [
        (
            DumpSettings(tool="msit", dump_path="/tmp/x", layer_name="model.layers.*"),
            "start with 'root'",
        ),
        (
            DumpSettings(tool="msit", dump_path="/tmp/x", layer_name="root.model.layers.[0-4]"),
            "wildcard only",
        ),
        (DumpSettings(tool="msit", dump_path=""), "required"),
        (DumpSettings(tool="msit", dump_path="/tmp/x", token_start=5, token_end=5), "start < end"),
        (DumpSettings(tool="msit", dump_path="/tmp/x", modes=("api",)), "at least one API"),
        (
            DumpSettings(tool="msit", dump_path="/tmp/x", modes=("api",), api_list=("x;y",)),
            "dotted name",
        ),
        (DumpSettings(tool="sglang-tensor-dump", dump_path="/tmp/x"), "SGLang only"),
    ],
)
def test_bad_dump_settings(model: Path, dump: DumpSettings, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate(LaunchSpec("vllm-ascend", str(model), dump=dump))


def test_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        validate(LaunchSpec("reference", str(tmp_path / "nope")))
    (tmp_path / "m").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        validate(LaunchSpec("reference", str(tmp_path / "m")))


def test_spec_json_round_trip(model: Path) -> None:
    spec = LaunchSpec("sglang", str(model), extra_args=("--x",), expert_recorder_mode="per_pass",
                      dump=DumpSettings(tool="sglang-tensor-dump", dump_path="/tmp/a", api_list=("a.b",)))  # fmt: skip
    assert LaunchSpec.from_json(spec.to_json()) == spec
