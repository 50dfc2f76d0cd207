"""The Launch page headless (AppTest): empty workspace, command preview, re-attached launch, stop."""

from __future__ import annotations

import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from studio_backend.launch import procs
from studio_backend.launch.spec import LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT
from tests.launch.conftest import free_port, standin


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "run_studio.py"), default_timeout=60).run()
    return at.switch_page("app_pages/launch.py").run()


def test_empty_workspace_and_command_preview(workspace_dir: Path, model_dir: Path) -> None:
    at = _page()
    assert not at.exception, at.exception
    infos = " ".join(i.value for i in at.info)
    assert "No launches in this workspace yet" in infos
    assert "studio model create" in infos
    at.selectbox(key="engine").set_value("vllm-ascend").run()
    at.text_input(key="model_dir").set_value(str(model_dir)).run()
    assert at.selectbox(key="tool").value == "msprobe"  # vllm-ascend's own hook by default
    assert not at.exception, at.exception
    code = [c.value for c in at.code]
    assert code[0].startswith(
        f"{sys.executable} -m vllm.entrypoints.cli.main serve {model_dir} --host 127.0.0.1 --port 8017 --tensor-parallel-size 1"
    )
    assert "--additional-config" in code[0] and "msprobe_config.json" in code[0]
    assert '"task": "tensor"' in code[1]
    assert at.button(key="launch_btn").disabled  # vllm-ascend is not installed here
    at.text_input(key="model_dir").set_value(str(model_dir / "missing")).run()
    assert any("model directory does not exist" in e.value for e in at.error)


def test_empty_model_field_names_the_demo_model_once_made(workspace_dir: Path) -> None:
    at = _page()
    assert not any("The demo's model" in i.value for i in at.info)
    demo = workspace_dir.resolve() / "models" / "demo-tiny-realistic"
    demo.mkdir(parents=True)
    (demo / "config.json").write_text("{}")
    at.run()
    assert any(f"The demo's model (reference engine): `{demo}`" in i.value for i in at.info)


def test_no_dump_path_for_dump_tool_none(workspace_dir: Path, model_dir: Path) -> None:
    at = _page()
    at.text_input(key="model_dir").set_value(str(model_dir)).run()
    at.selectbox(key="tool").set_value("none").run()
    assert not at.exception, at.exception
    assert [t.label for t in at.text_input if t.label == "Dump path"] == []
    assert "launch-none" not in " ".join(c.value for c in at.code)
    assert any("No dump tool" in c.value for c in at.caption)
    at.selectbox(key="tool").set_value("msit").run()
    paths = [t.value for t in at.text_input if t.label == "Dump path"]
    assert paths == [str(workspace_dir.resolve() / "dumps" / "launch-msit")]


def test_reattached_launch_shown_and_stopped(workspace_dir: Path, model_dir: Path) -> None:
    ws = open_workspace(workspace_dir)
    sup = Supervisor(ws, poll_s=0.1)
    port = free_port()
    launch = sup.start(LaunchSpec("reference", str(model_dir), port=port), command=standin(port))
    sup.wait_status(launch.launch_id, ("ready",), 30)
    sup.close()
    ws.close()

    at = _page()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "ready"
    assert metrics["PID"] == str(launch.pid)
    assert metrics["Port"] == str(port)
    assert any(f"http://127.0.0.1:{port}" in m.value for m in at.markdown)
    at.button(key=f"stop_{launch.launch_id}").click().run()
    assert not at.exception, at.exception
    assert procs.group_members(launch.pgid) == []
    assert {m.label: m.value for m in at.metric}["Status"] == "stopped"


def test_crash_shows_exit_code_and_last_lines(workspace_dir: Path, model_dir: Path) -> None:
    ws = open_workspace(workspace_dir)
    sup = Supervisor(ws, poll_s=0.1)
    port = free_port()
    launch = sup.start(
        LaunchSpec("reference", str(model_dir), port=port),
        command=standin(port, "--crash-after", "0.3", "--exit-code", "9"),
    )
    sup.wait_status(launch.launch_id, ("crashed",), 30)
    sup.close()
    ws.close()

    at = _page()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Exit code"] == "9"
    assert [e.value for e in at.error] == ["the server crashed (exit code 9); last log lines:"]
    assert any("fatal: simulated failure in the model runner" in c.value for c in at.code)
