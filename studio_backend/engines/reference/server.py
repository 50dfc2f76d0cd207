"""OpenAI-compatible HTTP on rank 0; the other ranks follow through the process group.

Rank 0 runs a ThreadingHTTPServer in a thread and the engine loop in its main thread: pending
requests are batched (vLLM-style), the work order is broadcast to every rank, and all ranks run
the same steps (logits are all-gathered, so every rank picks the same tokens).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from studio_backend.engines.reference import parallel
from studio_backend.engines.reference.runner import ModelRunner

MAX_BODY = 8 * 1024 * 1024


class RequestError(ValueError):
    """A bad request: answered with HTTP 400 and an OpenAI-style error body."""


@dataclass
class Job:
    prompts: list[list[int]]
    max_tokens: int
    temperature: float
    seed: int
    events: queue.Queue = field(default_factory=queue.Queue)  # (prompt index, token) / None


def parse_prompt(raw: Any, tokenizer: Any) -> list[list[int]]:
    """OpenAI ``prompt``: a string, a list of strings, token ids, or a list of id lists."""

    def encode(text: str) -> list[int]:
        if tokenizer is None:
            raise RequestError("this model has no tokenizer: send token ids")
        return tokenizer.encode(text).ids

    if isinstance(raw, str):
        out = [encode(raw)]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        out = [list(raw)]
    elif isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
        out = [encode(p) for p in raw]
    elif (
        isinstance(raw, list)
        and raw
        and all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in raw)
    ):
        out = [list(p) for p in raw]
    else:
        raise RequestError("prompt must be a string, a list of strings or token id list(s)")
    if any(not p for p in out):
        raise RequestError("prompt is empty")
    return out


class Engine:
    """Rank 0's side: a queue of jobs served by the main thread."""

    def __init__(
        self, runner: ModelRunner, model_name: str, tokenizer: Any, stopping: threading.Event
    ) -> None:
        self.runner = runner
        self.model_name = model_name
        self.tokenizer = tokenizer
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.stopping = stopping

    def loop(self) -> None:
        while not self.stopping.is_set():
            try:
                first = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            while True:  # everything waiting joins this batch
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            self.run_batch(batch)
        parallel.broadcast_object({"op": "stop"})

    def run_batch(self, batch: list[Job]) -> None:
        # Requests with different sampling settings run one after the other.
        groups: dict[tuple[float, int], list[Job]] = {}
        for job in batch:
            groups.setdefault((job.temperature, job.seed), []).append(job)
        for (temperature, seed), jobs in groups.items():
            owners = [(j, i) for j in jobs for i in range(len(j.prompts))]
            order = {
                "op": "generate",
                "prompts": [p for j in jobs for p in j.prompts],
                "max_tokens": [j.max_tokens for j, _ in owners],
                "temperature": temperature,
                "seed": seed,
            }
            parallel.broadcast_object(order)

            def on_token(req: int, tok: int, owners: list = owners) -> None:
                job, idx = owners[req]
                job.events.put((idx, tok))

            try:
                gen = execute(self.runner, order, on_token)
                for req, (job, idx) in enumerate(owners):
                    job.events.put((idx, gen.finish_reasons[req]))
            except Exception as exc:  # noqa: BLE001 - the request gets the error, server lives
                for job in jobs:
                    job.events.put(exc)
            for job in jobs:
                job.events.put(None)


def execute(runner: ModelRunner, order: dict[str, Any], on_token: Any = None) -> Any:
    return runner.generate(
        order["prompts"],
        order["max_tokens"],
        temperature=order["temperature"],
        seed=order["seed"],
        on_token=on_token,
    )


def follow(runner: ModelRunner) -> None:
    """Ranks > 0: run every order rank 0 broadcasts until it says stop."""
    while True:
        order = parallel.broadcast_object(None)
        if not isinstance(order, dict) or order.get("op") == "stop":
            return
        execute(runner, order)


def make_handler(engine: Engine) -> type[BaseHTTPRequestHandler]:
    cfg = engine.runner.config

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            return  # quiet: the CLI prints one line per request itself

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            err = {"message": message, "type": "invalid_request_error", "code": status}
            self._json(status, {"error": err, "object": "error"})

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            if self.path == "/health":
                self._json(200, {"status": "ok"})
            elif self.path == "/v1/models":
                model = {
                    "id": engine.model_name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "studio-reference",
                    "max_model_len": cfg.max_position_embeddings,
                }
                self._json(200, {"object": "list", "data": [model]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            if self.path != "/v1/completions":
                self._error(404, f"no route {self.path}")
                return
            try:
                job, stream = self._parse()
            except RequestError as exc:
                self._error(400, str(exc))
                return
            engine.jobs.put(job)
            if stream:
                self._stream(job)
            else:
                self._complete(job)

        def _parse(self) -> tuple[Job, bool]:
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY:
                raise RequestError("missing or oversized JSON body")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as exc:
                raise RequestError(f"body is not JSON ({exc})") from exc
            if not isinstance(body, dict) or "prompt" not in body:
                raise RequestError("body must be a JSON object with a prompt")
            prompts = parse_prompt(body["prompt"], engine.tokenizer)
            max_tokens = body.get("max_tokens", 16)
            temperature = body.get("temperature", 1.0)
            if not isinstance(max_tokens, int) or max_tokens < 1:
                raise RequestError("max_tokens must be a positive integer")
            if not isinstance(temperature, int | float) or temperature < 0:
                raise RequestError("temperature must be >= 0")
            longest = max(len(p) for p in prompts) + max_tokens
            if longest > cfg.max_position_embeddings:
                raise RequestError(
                    f"prompt + max_tokens = {longest} exceeds {cfg.max_position_embeddings}"
                )
            if any(t < 0 or t >= cfg.vocab_size for p in prompts for t in p):
                raise RequestError(f"token ids must be in [0, {cfg.vocab_size})")
            seed = int(body.get("seed") or 0)
            return Job(prompts, max_tokens, float(temperature), seed), bool(body.get("stream"))

        def _events(self, job: Job):  # type: ignore[no-untyped-def]
            while True:
                ev = job.events.get()
                if ev is None:
                    return
                if isinstance(ev, Exception):
                    raise ev
                yield ev

        def _decode(self, ids: list[int]) -> str:
            return engine.tokenizer.decode(ids) if engine.tokenizer else ""

        def _complete(self, job: Job) -> None:
            tokens: list[list[int]] = [[] for _ in job.prompts]
            reasons = ["length"] * len(job.prompts)
            try:
                for idx, item in self._events(job):
                    if isinstance(item, str):
                        reasons[idx] = item
                    else:
                        tokens[idx].append(item)
            except Exception as exc:  # noqa: BLE001
                self._json(500, {"error": {"message": str(exc), "type": "server_error"}})
                return
            choices = [
                {
                    "index": i,
                    "text": self._decode(t),
                    "token_ids": t,
                    "logprobs": None,
                    "finish_reason": reasons[i],
                }
                for i, t in enumerate(tokens)
            ]
            completion = sum(len(t) for t in tokens)
            prompt = sum(len(p) for p in job.prompts)
            self._json(
                200,
                {
                    "id": f"cmpl-{uuid.uuid4().hex}",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": engine.model_name,
                    "choices": choices,
                    "usage": {
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "total_tokens": prompt + completion,
                    },
                },
            )

        def _stream(self, job: Job) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
            seen: list[list[int]] = [[] for _ in job.prompts]
            sent = [""] * len(job.prompts)

            def send(idx: int, text: str, token: int | None, reason: str | None) -> None:
                chunk = {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": engine.model_name,
                    "choices": [
                        {
                            "index": idx,
                            "text": text,
                            "token_ids": [] if token is None else [token],
                            "logprobs": None,
                            "finish_reason": reason,
                        }
                    ],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()

            try:
                for idx, item in self._events(job):
                    if isinstance(item, str):
                        send(idx, "", None, item)
                        continue
                    seen[idx].append(item)
                    text = self._decode(seen[idx])
                    delta, sent[idx] = text[len(sent[idx]) :], text
                    send(idx, delta, item, None)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return

    return Handler


def serve_rank0(
    runner: ModelRunner,
    model_dir: Path,
    host: str,
    port: int,
    ready: Any,
    stopping: threading.Event,
) -> None:
    """Serve until ``stopping`` is set (SIGTERM), then tell the other ranks to stop."""
    from studio_backend.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_dir) if (model_dir / "tokenizer.json").is_file() else None
    engine = Engine(runner, model_dir.name, tokenizer, stopping)
    httpd = ThreadingHTTPServer((host, port), make_handler(engine))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    thread.start()
    ready.set()
    try:
        engine.loop()
    finally:
        httpd.shutdown()
