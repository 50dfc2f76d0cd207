"""``studio bench serve``: end-to-end decode throughput of an OpenAI-compatible server.

For each batch size B, B requests are sent at once (concurrency = B), each with
``input_tokens`` prompt tokens (token ids) and ``max_tokens = output_tokens`` with
``ignore_eos`` so the server decodes the full length; throughput is the completion tokens the
server reports (``usage.completion_tokens``) divided by the wall time from the first request
sent to the last answer received, as in seed 002's second table.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from studio_backend.errors import InputError, StudioError


@dataclass
class ServeBenchConfig:
    url: str
    batches: list[int] = field(default_factory=lambda: [1, 2, 4, 6, 8])
    input_tokens: int = 1
    output_tokens: int = 1024
    model: str | None = None
    timeout_s: float = 3600.0
    name: str | None = None
    prompt_token_id: int = 1


def _base(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InputError(url, "expected an http(s) URL such as http://127.0.0.1:8000")
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def _request(url: str, payload: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(  # noqa: S310 - the scheme is checked in _base
        url, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")[:300]
        raise StudioError(f"{url}: HTTP {exc.code}: {body}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise StudioError(f"{url}: cannot reach the server ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise StudioError(f"{url}: the answer is not JSON") from exc


def discover_model(base: str, timeout: float = 30.0) -> str:
    """The first model the server lists under /v1/models."""
    doc = _request(f"{base}/v1/models", None, timeout)
    models = doc.get("data") or []
    if not models or "id" not in models[0]:
        raise StudioError(f"{base}/v1/models lists no model: pass --model")
    return str(models[0]["id"])


def _completion(base: str, model: str, cfg: ServeBenchConfig, max_tokens: int) -> int:
    payload = {
        "model": model,
        "prompt": [cfg.prompt_token_id] * cfg.input_tokens,
        "max_tokens": max_tokens,
        "min_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": False,
    }
    doc = _request(f"{base}/v1/completions", payload, cfg.timeout_s)
    usage = doc.get("usage") or {}
    if "completion_tokens" not in usage:
        raise StudioError(f"{base}/v1/completions: the answer has no usage.completion_tokens")
    return int(usage["completion_tokens"])


def run_serve_bench(
    cfg: ServeBenchConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Measure every batch size; returns ``{"run": {...}, "serve_results": [rows]}``."""
    say = progress or (lambda _msg: None)
    if not cfg.batches or min(cfg.batches) < 1:
        raise InputError(f"--batch {cfg.batches}", "batch sizes must be positive integers")
    if cfg.input_tokens < 1 or cfg.output_tokens < 1:
        raise InputError("--input-tokens/--output-tokens", "must be at least 1")
    base = _base(cfg.url)
    model = cfg.model or discover_model(base)
    _completion(base, model, cfg, 2)  # warm-up, not measured
    rows = []
    for batch in cfg.batches:
        with ThreadPoolExecutor(max_workers=batch) as pool:
            t0 = time.perf_counter()
            futures = [
                pool.submit(_completion, base, model, cfg, cfg.output_tokens) for _ in range(batch)
            ]
            tokens = [f.result() for f in futures]
            wall = time.perf_counter() - t0
        total = sum(tokens)
        rows.append(
            {
                "batch": batch,
                "requests": batch,
                "input_tokens": cfg.input_tokens,
                "output_tokens": total,
                "wall_s": wall,
                "tokens_per_s": total / wall,
            }
        )
        short = (
            "" if total == batch * cfg.output_tokens else f" (expected {batch * cfg.output_tokens})"
        )
        say(f"batch {batch}: {total} tokens{short} in {wall:.2f} s = {total / wall:.1f} tokens/s")
    run = {
        "run_id": uuid.uuid4().hex[:12],
        "kind": "serve",
        "name": cfg.name or f"serve {model} @ {urllib.parse.urlparse(base).netloc}",
        "device": "remote",
        "device_name": f"{model} at {base}",
        "versions": {},
        "config": {
            "url": base,
            "model": model,
            "batches": cfg.batches,
            "input_tokens": cfg.input_tokens,
            "output_tokens": cfg.output_tokens,
        },
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": "measured",
        "copy_gbps": None,
        "datasheet_gbps": None,
        "notes": "",
    }
    return {"run": run, "kernel_results": [], "serve_results": rows}
