"""ShareGPT JSON (a list of ``{id, conversations: [{from, value}, ...]}``) as requests.

Turn modes (seed 004): ``full`` makes each conversation one request (its whole history up to the
last assistant turn); ``per_user_turn`` makes every user turn a request whose prompt is the
conversation so far, so turns of one conversation share growing prefixes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio_backend.dsa.workloads import Request
from studio_backend.errors import InputError

USER = {"human", "user"}
ASSISTANT = {"gpt", "assistant", "model", "chatgpt", "bing", "bard"}
DEFAULT_SYSTEM = "A chat between a curious user and an artificial intelligence assistant."


def _messages(conv: dict[str, Any]) -> list[tuple[str, str]]:
    turns = conv.get("conversations") or conv.get("conversation") or conv.get("messages") or []
    out = []
    for t in turns:
        if not isinstance(t, dict):
            continue
        role = str(t.get("from", t.get("role", ""))).lower()
        text = t.get("value", t.get("content", ""))
        if not isinstance(text, str) or not text.strip():
            continue
        if role in USER:
            out.append(("user", text))
        elif role in ASSISTANT:
            out.append(("assistant", text))
    return out


def render(system: str, messages: list[tuple[str, str]]) -> str:
    """A plain chat template; the system line is the prefix every request shares."""
    parts = [f"SYSTEM: {system}\n"]
    parts += [f"{'USER' if r == 'user' else 'ASSISTANT'}: {t}\n" for r, t in messages]
    return "".join(parts) + "ASSISTANT:"


def load_sharegpt(
    path: Path, mode: str = "full", limit: int = 0, system: str = DEFAULT_SYSTEM
) -> list[Request]:
    if mode not in ("full", "per_user_turn"):
        raise InputError(mode, "turn mode must be 'full' or 'per_user_turn'")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable ShareGPT JSON file ({exc})") from exc
    if not isinstance(data, list):
        raise InputError(path, "ShareGPT JSON must be a list of conversations")
    reqs: list[Request] = []
    for n, conv in enumerate(data):
        if not isinstance(conv, dict):
            continue
        msgs = _messages(conv)
        cid = str(conv.get("id", n))
        if not msgs:
            continue
        if mode == "full":
            # history up to (excluding) the last assistant turn, which the model generates
            end = max((i for i, (r, _) in enumerate(msgs) if r == "assistant"), default=len(msgs))
            history = msgs[:end] or msgs
            reqs.append(Request(len(reqs), render(system, history), cid))
        else:
            for i, (role, _) in enumerate(msgs):
                if role == "user":
                    reqs.append(Request(len(reqs), render(system, msgs[: i + 1]), cid))
        if limit and len(reqs) >= limit:
            return reqs[:limit]
    return reqs
