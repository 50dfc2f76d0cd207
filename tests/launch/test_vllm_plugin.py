"""The vLLM plugin against stand-in vllm-ascend packages laid out like 0.23 and older releases."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest

from studio_backend.launch import vllm_plugin

# A worker like vllm-ascend's: warm-up runs forwards, then returns a value (CompilationTimes/float).
WORKER_SRC = textwrap.dedent(
    """
    class Model:
        def __init__(self):
            self.forwards = []
            self.hook = None
        def __call__(self, x):
            self.forwards.append((x, self.hook is not None))
            return x

    class Runner:
        def __init__(self):
            self.model = Model()

    class NPUWorker:
        def __init__(self):
            self.model_runner = Runner()
        def compile_or_warm_up_model(self):
            for size in (4, 2, 1):          # dummy runs of the warm-up
                self.model_runner.model(size)
            return 0.125
    """
)

# msit_llm's two entry points, recording what they receive.
MSIT_SRC = textwrap.dedent(
    """
    calls = []
    class DumpConfig:
        def __init__(self, dump_path=None, token_range=None, module_list=None, api_list=None,
                     tensor_part=2, device_id=None, mode=None, layer_name=None):
            self.kwargs = dict(dump_path=dump_path, token_range=token_range, api_list=api_list,
                               mode=mode, layer_name=layer_name)
    def register_hook(model, config, hook_name="dump_data"):
        model.hook = config
        calls.append((model, config))
    """
)

FAKE_NPU_SRC = "def npu_kronecker_quant(x, left, right):\n    return x\n"


def _write_pkg(root: Path, module_file: str) -> None:
    pkg = root / "vllm_ascend" / "worker"
    pkg.mkdir(parents=True)
    (root / "vllm_ascend" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / module_file).write_text(WORKER_SRC)
    (root / "msit_llm").mkdir()
    (root / "msit_llm" / "__init__.py").write_text(MSIT_SRC)
    (root / "fake_torch_npu.py").write_text(FAKE_NPU_SRC)


def _forget_stand_ins() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("vllm_ascend", "msit_llm", "fake_torch_npu"):
            del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def clean_imports(monkeypatch: pytest.MonkeyPatch):
    # The real msit_llm may already be imported by another test in this worker: drop it so the
    # stand-in on the prepended path is the one imported.
    _forget_stand_ins()
    before = list(sys.meta_path)
    yield
    sys.meta_path[:] = before
    _forget_stand_ins()


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **extra) -> dict:
    cfg = {
        "dump_path": str(tmp_path / "dump"),
        "token_range": [0, 1],
        "layer_name": "root.model.layers.*",
        "mode": ["module", "api"],
        "api_list": ["fake_torch_npu.npu_kronecker_quant"],
        "dump_statistics_mode": 1,  # not in this stand-in's DumpConfig: must be dropped
        **extra,
    }
    path = tmp_path / "msit_config.json"
    path.write_text(json.dumps(cfg))
    monkeypatch.setenv(vllm_plugin.ENV, str(path))
    return cfg


@pytest.mark.parametrize("module_file", ["worker.py", "worker_v1.py"])
@pytest.mark.parametrize("order", ["plugin_first", "worker_first"])
def test_hooks_registered_after_warm_up(
    tmp_path, monkeypatch, clean_imports, capfd, module_file, order
) -> None:
    _write_pkg(tmp_path / "site", module_file)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _config(tmp_path, monkeypatch)
    name = "vllm_ascend.worker." + module_file[:-3]
    if order == "worker_first":
        worker_mod = importlib.import_module(name)
        vllm_plugin.register()
    else:
        vllm_plugin.register()
        vllm_plugin.register()  # vLLM may load plugins more than once per process
        worker_mod = importlib.import_module(name)

    worker = worker_mod.NPUWorker()
    assert worker.compile_or_warm_up_model() == 0.125  # return value preserved
    model = worker.model_runner.model
    assert model.forwards == [(4, False), (2, False), (1, False)]  # warm-up not hooked
    model(7)
    assert model.forwards[-1] == (7, True)  # real requests are

    import fake_torch_npu
    import msit_llm

    assert len(msit_llm.calls) == 1  # once, even after two register() calls
    hooked_model, config = msit_llm.calls[0]
    assert hooked_model is model
    assert config.kwargs == {
        "dump_path": str(tmp_path / "dump"),
        "token_range": [0, 1],
        "api_list": [fake_torch_npu.npu_kronecker_quant],
        "mode": ["module", "api"],
        "layer_name": "root.model.layers.*",
    }
    err = capfd.readouterr().err
    assert "ignores dump_statistics_mode" in err
    assert "msit dump hooks registered on Model after warm-up" in err


def test_inactive_without_env(tmp_path, monkeypatch, clean_imports) -> None:
    _write_pkg(tmp_path / "site", "worker.py")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delenv(vllm_plugin.ENV, raising=False)
    vllm_plugin.register()
    mod = importlib.import_module("vllm_ascend.worker.worker")
    assert not getattr(mod.NPUWorker.compile_or_warm_up_model, vllm_plugin.MARK, False)
    assert not any(isinstance(f, vllm_plugin.WorkerFinder) for f in sys.meta_path)


def test_missing_msit_keeps_serving(tmp_path, monkeypatch, clean_imports, capfd) -> None:
    _write_pkg(tmp_path / "site", "worker_v1.py")
    (tmp_path / "site" / "msit_llm" / "__init__.py").write_text(
        "raise ImportError('no msit here')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _config(tmp_path, monkeypatch)
    vllm_plugin.register()
    worker = importlib.import_module("vllm_ascend.worker.worker_v1").NPUWorker()
    assert worker.compile_or_warm_up_model() == 0.125
    assert "msit dump hooks NOT registered: ImportError: no msit here" in capfd.readouterr().err


def test_entry_point_declared() -> None:
    import tomllib

    data = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    eps = data["project"]["entry-points"]["vllm.general_plugins"]
    assert eps == {"studio_msit_dump": "studio_backend.launch.vllm_plugin:register"}
