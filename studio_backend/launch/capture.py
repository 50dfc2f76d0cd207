"""The dump request of seed 000's dump_request.py: a text truncated to N tokens, one completion.

The text (a file or pasted) is cut to ``n_tokens`` with the model's own tokenizer and sent to
the launch's OpenAI ``/v1/completions``; the dump folders that appear meanwhile under the
launch's dump path are recorded with the capture so ingest can pick them up.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError, StudioError
from studio_backend.launch.supervisor import Launch, new_id
from studio_backend.paths import existing_file
from studio_backend.workspace import Workspace

MAX_TEXT_BYTES = 64 * 1024 * 1024


@dataclass
class Prompt:
    source: str  # file path or 'pasted text'
    text: str
    n_tokens: int


@dataclass
class CaptureResult:
    capture_id: str
    prompt: Prompt
    completion: str
    dump_roots: list[str]
    usage: dict[str, Any]


def read_text(text_file: str | None = None, text: str | None = None) -> tuple[str, str]:
    """(source, text) from exactly one of a file or pasted text."""
    if (text_file is None) == (text is None):
        raise InputError("capture text", "give exactly one of a text file or pasted text")
    if text_file is not None:
        path = existing_file(text_file, "text file")
        if path.stat().st_size > MAX_TEXT_BYTES:
            raise InputError(path, f"larger than {MAX_TEXT_BYTES // 2**20} MiB")
        try:
            return str(path), path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    assert text is not None
    return "pasted text", text


def truncate(model_dir: str | Path, text: str, n_tokens: int) -> tuple[str, int]:
    """The text cut to at most ``n_tokens`` tokens of the model's tokenizer, and its length."""
    if n_tokens < 1:
        raise InputError(f"tokens {n_tokens}", "must be at least 1")
    if not text.strip():
        raise InputError("capture text", "is empty")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(model_dir, f"cannot load the model's tokenizer: {exc}") from exc
    ids = tok(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return tok.decode(ids), len(ids)


def _request(url: str, body: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    if not url.startswith("http://"):
        raise InputError(url, "only http:// URLs of launched servers are requested")
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the launch's own URL
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        raise StudioError(f"{url} answered {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise StudioError(f"{url} is not reachable: {exc}") from exc


def served_model(base_url: str) -> str:
    models = _request(f"{base_url}/v1/models", None, 10).get("data") or []
    if not models:
        raise StudioError(f"{base_url}/v1/models lists no model")
    return str(models[0]["id"])


def _newest(path: Path, depth: int) -> float:
    """Newest mtime of ``path`` and its folders ``depth`` levels down (new step folders show there)."""
    newest = path.stat().st_mtime
    if depth and path.is_dir():
        for child in path.iterdir():
            if child.is_dir():
                newest = max(newest, _newest(child, depth - 1))
    return newest


def _snapshot(dump_path: str | None) -> dict[str, float]:
    if not dump_path or not Path(dump_path).is_dir():
        return {}
    # msit: <root>/torch_tensors/<device>_<pid>/<step>: a new step updates the device folder.
    return {p.name: _newest(p, 3) for p in Path(dump_path).iterdir()}


def new_dump_roots(dump_path: str | None, before: dict[str, float], tool: str | None) -> list[str]:
    """Dump roots written by this request: new (or updated) folders under the dump path.

    msit writes ``msit_dump_<time>/`` per process start; msprobe writes ``step<N>/`` folders
    directly under the dump path, so its root is the dump path itself.
    """
    if not dump_path:
        return []
    after = _snapshot(dump_path)
    changed = sorted(n for n, t in after.items() if n not in before or t > before[n])
    if tool == "msprobe":
        return [dump_path] if changed else []
    return [str(Path(dump_path) / n) for n in changed if (Path(dump_path) / n).is_dir()]


def capture(
    ws: Workspace,
    launch: Launch,
    *,
    text_file: str | None = None,
    text: str | None = None,
    n_tokens: int = 2000,
    max_tokens: int = 1,
    timeout: float = 600,
) -> CaptureResult:
    """Send the dump request to a ready launch and record it in ``captures``."""
    if launch.status != "ready":
        raise StudioError(f"launch {launch.launch_id} is {launch.status}, not ready")
    if max_tokens < 1:
        raise InputError(f"max tokens {max_tokens}", "must be at least 1")
    source, raw = read_text(text_file, text)
    prompt_text, count = truncate(launch.model_dir, raw, n_tokens)
    prompt = Prompt(source, prompt_text, count)
    capture_id = open_capture(ws, launch.launch_id, source, count, max_tokens)
    before = _snapshot(launch.dump_path)
    try:
        model = served_model(launch.base_url)
        body = {"model": model, "prompt": prompt_text, "max_tokens": max_tokens, "temperature": 0}
        reply = _request(f"{launch.base_url}/v1/completions", body, timeout)
    except StudioError as exc:
        finish_capture(ws, capture_id, "failed", None, [], str(exc))
        raise
    completion = "".join(c.get("text", "") for c in reply.get("choices", []))
    roots = new_dump_roots(launch.dump_path, before, launch.dump_tool)
    finish_capture(ws, capture_id, "done", completion, roots, None)
    ws.log(
        "capture",
        f"{capture_id}: {count} tokens sent to {launch.launch_id}; {len(roots)} dump folder(s)",
    )
    return CaptureResult(capture_id, prompt, completion, roots, reply.get("usage") or {})


def open_capture(
    ws: Workspace, launch_id: str, source: str, prompt_tokens: int, max_tokens: int
) -> str:
    """Record a request as sent to ``launch_id``; returns its capture id."""
    capture_id = new_id("C")
    with ws.transaction() as cur:
        cur.execute(
            "INSERT INTO captures (capture_id, launch_id, source, prompt_tokens, max_tokens, status)"
            " VALUES (?, ?, ?, ?, ?, 'sent')",
            [capture_id, launch_id, source, prompt_tokens, max_tokens],
        )
    return capture_id


def finish_capture(
    ws: Workspace,
    capture_id: str,
    status: str,
    completion: str | None,
    roots: list[str],
    message: str | None,
) -> None:
    with ws.transaction() as cur:
        cur.execute(
            "UPDATE captures SET status = ?, completion = ?, dump_root = ?, message = ?,"
            " finished_at = current_timestamp WHERE capture_id = ?",
            [status, completion, json.dumps(roots), message, capture_id],
        )


def set_ingest(
    ws: Workspace, capture_id: str, status: str, run_id: str | None, message: str | None = None
) -> None:
    with ws.transaction() as cur:
        cur.execute(
            "UPDATE captures SET status = ?, run_id = coalesce(?, run_id), message = ? WHERE capture_id = ?",
            [status, run_id, message, capture_id],
        )


def list_captures(ws: Workspace, launch_id: str | None = None) -> list[dict[str, Any]]:
    sql = (
        "SELECT capture_id, launch_id, source, prompt_tokens, max_tokens, status, run_id,"
        " dump_root, message, created_at FROM captures"
    )
    params: list[Any] = []
    if launch_id:
        sql += " WHERE launch_id = ?"
        params.append(launch_id)
    cur = ws.cursor().execute(sql + " ORDER BY created_at DESC", params)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
