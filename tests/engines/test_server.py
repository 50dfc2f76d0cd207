"""The OpenAI server over HTTP on 127.0.0.1 (tp=2), and clean SIGTERM shutdown of the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from studio_backend.engines.reference.launcher import ServerHandle, start_server
from studio_backend.engines.reference.offline import run_offline
from studio_backend.engines.reference.parallel import free_port
from studio_backend.models.config import read_config
from studio_backend.models.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[2]
PROMPT_IDS = [11, 57, 203, 9, 100]
TEXT = "Experts route tokens."


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def until_eos(tokens: list[int], eos: int | None) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


@pytest.fixture(scope="module")
def server(tiny_model: Path):
    handle = start_server(tiny_model, tp=2, port=free_port())
    handle.wait_ready()
    yield handle
    handle.stop()
    assert not any(p.is_alive() for p in handle.procs)


@pytest.fixture(scope="module")
def expected(tiny_model: Path) -> list[list[int]]:
    tok = load_tokenizer(tiny_model)
    eos = read_config(tiny_model).eos_token_id
    res = run_offline(tiny_model, tp=1, prompts=[PROMPT_IDS, tok.encode(TEXT).ids], max_tokens=4)
    return [until_eos(t, eos) for t in res.tokens]


def test_health_and_models(server: ServerHandle, tiny_model: Path) -> None:
    assert get(server.url + "/health") == {"status": "ok"}
    models = get(server.url + "/v1/models")
    assert [m["id"] for m in models["data"]] == [tiny_model.name]


def test_completion_token_ids_and_text(
    server: ServerHandle, expected: list[list[int]], tiny_model: Path
) -> None:
    status, out = post(
        server.url + "/v1/completions", {"prompt": PROMPT_IDS, "max_tokens": 4, "temperature": 0}
    )
    assert status == 200
    choice = out["choices"][0]
    assert choice["token_ids"] == expected[0]
    assert choice["text"] == load_tokenizer(tiny_model).decode(expected[0])
    assert out["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": len(expected[0]),
        "total_tokens": 5 + len(expected[0]),
    }
    status, out = post(
        server.url + "/v1/completions", {"prompt": TEXT, "max_tokens": 4, "temperature": 0}
    )
    assert out["choices"][0]["token_ids"] == expected[1]


def test_concurrent_requests_are_batched_correctly(
    server: ServerHandle, expected: list[list[int]]
) -> None:
    results: dict[int, dict] = {}

    def call(i: int, prompt: object) -> None:
        results[i] = post(
            server.url + "/v1/completions", {"prompt": prompt, "max_tokens": 4, "temperature": 0}
        )[1]

    threads = [
        threading.Thread(target=call, args=(i, p))
        for i, p in enumerate([PROMPT_IDS, TEXT, PROMPT_IDS])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    got = [results[i]["choices"][0]["token_ids"] for i in range(3)]
    assert got == [expected[0], expected[1], expected[0]]


def test_stream_sse(server: ServerHandle, expected: list[list[int]]) -> None:
    body = {"prompt": PROMPT_IDS, "max_tokens": 4, "temperature": 0, "stream": True}
    req = urllib.request.Request(
        server.url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = [ln for ln in r.read().decode().split("\n\n") if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln.removeprefix("data: ")) for ln in lines[:-1]]
    ids = [t for c in chunks for t in c["choices"][0]["token_ids"]]
    assert ids == expected[0]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


def test_bad_requests(server: ServerHandle) -> None:
    url = server.url + "/v1/completions"
    assert post(url, {"max_tokens": 2})[0] == 400
    assert post(url, {"prompt": [1, 2], "max_tokens": 0})[0] == 400
    status, out = post(url, {"prompt": [1, 99999], "max_tokens": 1})
    assert status == 400 and "token ids" in out["error"]["message"]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
def test_cli_sigterm_stops_every_rank(tiny_model: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "studio_backend.cli",
            "serve-reference",
            "--model",
            str(tiny_model),
            "--tp",
            "2",
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line
        assert get(f"http://127.0.0.1:{port}/health") == {"status": "ok"}
        # Two rank processes plus multiprocessing's resource tracker: none may outlive it.
        ranks = _children(proc.pid)
        assert len(ranks) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{c}").exists() for c in ranks) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [
            c
            for c in ranks
            if Path(f"/proc/{c}").exists()
            and "Z" not in Path(f"/proc/{c}/stat").read_text().split()[2]
        ]
        assert alive == []
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
