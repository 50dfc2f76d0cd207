"""The Launch page with engine `vllm`: the exact command, the interpreter, a failed start explained."""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from studio_backend.launch.commands import Command
from studio_backend.launch.engine_python import SOURCE_ROOT, default_python, probe_vllm
from studio_backend.launch.spec import LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT
from tests.launch.conftest import free_port

DATA = Path(__file__).with_name("data")


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "run_studio.py"), default_timeout=60).run()
    return at.switch_page("app_pages/launch.py").run()


def test_vllm_command_shown_exactly(workspace_dir: Path, model_dir: Path) -> None:
    at = _page()
    at.selectbox(key="engine").set_value("vllm").run()
    at.text_input(key="model_dir").set_value(str(model_dir)).run()
    at.selectbox(key="tool").set_value("msit").run()
    assert not at.exception, at.exception
    python = default_python("vllm")
    assert at.text_input(key="python_vllm").value == python
    code = [c.value for c in at.code]
    cmd = next(c for c in code if "vllm.entrypoints.openai.api_server" in c)
    assert f"PYTHONPATH={SOURCE_ROOT}" in cmd
    assert f"STUDIO_MSIT_DUMP_CONFIG={workspace_dir}" in cmd  # the config the plugin reads
    assert cmd.endswith(
        f"{python} -m vllm.entrypoints.openai.api_server --model {model_dir} --host 127.0.0.1 "
        "--port 8017 --tensor-parallel-size 1 --dtype auto --max-model-len 2000 "
        "--trust-remote-code --enforce-eager"
    )
    install = probe_vllm(python)
    assert ("VLLM_CPU_KVCACHE_SPACE=1" in cmd) == install.cpu
    assert at.button(key="launch_btn").disabled == (install.distribution is None)
    if install.distribution is None:
        assert any("has no vllm or vllm-cpu installed" in w.value for w in at.warning)


def test_other_interpreter_named_on_the_page(workspace_dir: Path, model_dir: Path) -> None:
    at = _page()
    at.selectbox(key="engine").set_value("vllm").run()
    at.text_input(key="model_dir").set_value(str(model_dir)).run()
    at.text_input(key="python_vllm").set_value(sys.executable).run()
    assert not at.exception, at.exception
    cmd = next(c.value for c in at.code if "api_server" in c.value)
    assert f"{sys.executable} -m vllm.entrypoints.openai.api_server" in cmd
    assert at.button(key="launch_btn").disabled  # the studio's own Python has no vLLM
    at.text_input(key="python_vllm").set_value("/no/such/python").run()
    assert any("is not an executable file" in e.value for e in at.error)


def test_failed_start_explained(workspace_dir: Path, model_dir: Path) -> None:
    log = DATA / "vllm_cpu_no_kvcache_space.log"  # what real vllm-cpu wrote without the variable
    replay = Command(argv=[sys.executable, "-c",
                           f"import sys; sys.stdout.write(open({str(log)!r}).read()); sys.exit(1)"])  # fmt: skip
    ws = open_workspace(workspace_dir)
    sup = Supervisor(ws, poll_s=0.1)
    launch = sup.start(LaunchSpec("vllm", str(model_dir), port=free_port()), command=replay)
    sup.wait_status(launch.launch_id, ("crashed",), 30)
    sup.close()
    ws.close()

    at = _page()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "the server crashed (exit code 1); why and last log lines:"
    ]
    assert "vLLM on CPU needs VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), e.g. 1" in [
        w.value for w in at.warning
    ]
    assert any(
        "ValueError: Available memory on node 0" in c.value and "log lines that matter" in c.value
        for c in at.code
    )
