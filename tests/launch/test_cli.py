"""``studio launch/launches/capture`` on the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from studio_backend.cli import main
from studio_backend.launch.spec import LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from studio_backend.workspace import open_workspace
from tests.launch.conftest import free_port, standin


def test_print_command_vllm_ascend_msit(
    workspace_dir: Path, model_dir: Path, tmp_path: Path, capsys
) -> None:
    rc = main([
        "launch", "--engine", "vllm-ascend", "--model", str(model_dir), "--tp", "4",
        "--port", "8017", "--dump-tool", "msit", "--dump-path", str(tmp_path / "d"),
        "--token-range", "0:3", "--print-command", "--", "--seed", "1",
    ])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("STUDIO_MSIT_DUMP_CONFIG=" + str(workspace_dir / "launches"))
    assert out[0].endswith(
        f"msit_config.json {sys.executable} -m vllm.entrypoints.cli.main serve {model_dir} --host 127.0.0.1 --port 8017 "
        "--tensor-parallel-size 4 --dtype auto --max-model-len 2000 --trust-remote-code "
        "--enforce-eager --seed 1"
    )
    cfg = json.loads("\n".join(out[2:]))
    assert cfg["token_range"] == [0, 1, 2] and cfg["layer_name"] == "root.model.layers.*"


def test_bad_input_is_one_line(workspace_dir: Path, model_dir: Path, capsys) -> None:
    rc = main(["launch", "--engine", "reference", "--model", str(model_dir), "--host", "0.0.0.0"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-remote" in err
    assert main(["capture", "--text", "w1"]) == 2
    assert "no ready launch" in capsys.readouterr().err


def test_launches_and_capture(
    workspace_dir: Path, tokenized_model: Path, tmp_path: Path, capsys
) -> None:
    ws = open_workspace(workspace_dir)
    sup = Supervisor(ws, poll_s=0.1)
    port = free_port()
    record = tmp_path / "req.jsonl"
    launch = sup.start(LaunchSpec("reference", str(tokenized_model), port=port),
                       command=standin(port, "--record", str(record)))  # fmt: skip
    sup.wait_status(launch.launch_id, ("ready",), 30)
    sup.close()
    ws.close()

    assert main(["launches", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["launch"], r["status"], r["pid"]) for r in rows] == [
        (launch.launch_id, "ready", launch.pid)
    ]
    assert main(["capture", "--text", "w1 w2 w3 w4", "--tokens", "3"]) == 0
    assert "capture C" in capsys.readouterr().out
    assert json.loads(record.read_text())["prompt"] == "w1 w2 w3"
    assert main(["launches", "--stop", launch.launch_id]) == 0
    assert f"launch {launch.launch_id} stopped" in capsys.readouterr().out
    assert main(["launches", "--log", launch.launch_id, "--lines", "200"]) == 0
    assert "POST /v1/completions" in capsys.readouterr().out
