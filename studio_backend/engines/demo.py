"""``studio demo``: a real multi-rank msit dump in one command, without any hardware.

Creates the tiny model made to look like a real LLM inside (studio_backend/models/realism.py; once
per workspace), serves it with tp=2 and msit_llm dumps, sends the bundled capture text (after
``<|im_start|>``, as a chat template starts a prompt) as one completion request, stops the server
and leaves the dump under the workspace's dumps directory. ``demo_fill`` then fills every page.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from studio_backend.engines.reference.dumping import DumpOptions
from studio_backend.engines.reference.launcher import start_server
from studio_backend.engines.reference.parallel import free_port
from studio_backend.models.create import create_model
from studio_backend.models.tokenizer import ASSETS

CAPTURE_TEXT = ASSETS / "capture" / "demo_request.txt"
FIRST_TOKEN = "<|im_start|>"  # noqa: S105 - a token: it carries the massive activations
# v2: realistic demo model (massive tokens, skewed routing); an older workspace's v1 model stays.
DEMO_MODEL = "demo-tiny-realistic"
Progress = Callable[[float, str], None]


@dataclass
class DemoResult:
    model_dir: Path
    dump_root: Path
    completion: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    port: int  # where the server listened (the demo's launch record names it)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(  # noqa: S310 - our own server on 127.0.0.1
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as r:  # noqa: S310
        return json.loads(r.read())


def demo_prompt() -> str:
    """The demo request: the capture text after the start token."""
    return FIRST_TOKEN + CAPTURE_TEXT.read_text(encoding="utf-8")


def demo_model(models_dir: Path, progress: Progress | None = None) -> Path:
    """The demo model's folder, created on first use (once per workspace)."""
    model_dir = models_dir / DEMO_MODEL
    if not (model_dir / "config.json").is_file():
        if progress:
            progress(
                0.05, "Creating the tiny Qwen3-MoE model (massive activations, skewed routing)"
            )
        create_model(model_dir, preset="tiny", seed=0, outliers=True)
    return model_dir


def run_demo(
    dumps_dir: Path,
    models_dir: Path,
    progress: Progress | None = None,
    tp: int = 2,
    max_tokens: int = 4,
) -> DemoResult:
    """Run the demo; ``progress(fraction, message)`` reports each stage."""
    t0 = time.monotonic()
    say = progress or (lambda f, m: None)
    model_dir = demo_model(models_dir, say)
    say(0.15, f"Starting the reference engine (tp={tp}, msit_llm dumps)")
    dump = DumpOptions(tool="msit", dump_path=dumps_dir, token_range=list(range(max_tokens)))
    port = free_port()
    server = start_server(model_dir, tp=tp, port=port, dump=dump)
    try:
        server.wait_ready()
        say(0.55, "Sending the capture request")
        text = demo_prompt()
        out = _post(
            server.url + "/v1/completions",
            {"model": DEMO_MODEL, "prompt": text, "max_tokens": max_tokens, "temperature": 0},
        )
    finally:
        say(0.85, "Stopping the server")
        server.stop()
    if server.dump_root is None:
        raise RuntimeError("the server reported no dump root")
    say(1.0, f"Dump written to {server.dump_root}")
    return DemoResult(
        model_dir=model_dir,
        dump_root=server.dump_root,
        completion=out["choices"][0]["text"],
        prompt_tokens=out["usage"]["prompt_tokens"],
        completion_tokens=out["usage"]["completion_tokens"],
        seconds=time.monotonic() - t0,
        port=port,
    )
