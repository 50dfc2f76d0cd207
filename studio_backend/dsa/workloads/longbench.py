"""LongBench v2 (THUDM/LongBench, dataset THUDM/LongBench-v2 = zai-org/LongBench-v2) as requests.

Published format: ``data.json``, a JSON list of ``{_id, domain, sub_domain, difficulty,
length, question, choice_A, choice_B, choice_C, choice_D, answer, context}`` (also accepted:
the same objects one per line, as ``datasets`` exports them). The prompt is the repository's
zero-shot template ``prompts/0shot.txt``; a prompt over the byte budget loses its middle, as
the repository's ``pred.py`` truncates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from studio_backend.dsa.workloads import Request, truncate_middle
from studio_backend.errors import InputError

TEMPLATE_0SHOT = (
    "Please read the following text and answer the question below.\n\n<text>\n$DOC$\n</text>\n\n"
    "What is the correct answer to this question: $Q$\nChoices:\n(A) $C_A$\n(B) $C_B$\n"
    "(C) $C_C$\n(D) $C_D$\n\n"
    'Format your response as follows: "The correct answer is (insert answer here)".'
)
FIELDS = ("context", "question", "choice_A", "choice_B", "choice_C", "choice_D")


def render(item: dict[str, Any]) -> str:
    """``prompts/0shot.txt`` filled in (the placeholders replaced in pred.py's order)."""
    return (
        TEMPLATE_0SHOT.replace("$DOC$", item["context"].strip())
        .replace("$Q$", item["question"].strip())
        .replace("$C_A$", item["choice_A"].strip())
        .replace("$C_B$", item["choice_B"].strip())
        .replace("$C_C$", item["choice_C"].strip())
        .replace("$C_D$", item["choice_D"].strip())
    )


def _items(path: Path) -> list[Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read LongBench v2 file ({exc})") from exc
    try:
        if raw.lstrip()[:1] == b"[":
            data = orjson.loads(raw)
        else:
            data = [orjson.loads(x) for x in raw.splitlines() if x.strip()]
    except orjson.JSONDecodeError as exc:
        raise InputError(
            path, f"not LongBench v2 data.json (a JSON list) nor JSONL ({exc})"
        ) from exc
    return data


def load_longbench_v2(path: Path, limit: int = 0, max_prompt_bytes: int = 0) -> list[Request]:
    """Requests in file order (``conversation`` = the item's ``_id``)."""
    reqs: list[Request] = []
    for n, item in enumerate(_items(path)):
        if not isinstance(item, dict):
            raise InputError(path, f"item {n} is not an object")
        missing = [k for k in FIELDS if not isinstance(item.get(k), str)]
        if missing:
            raise InputError(
                path, f"item {n} lacks LongBench v2 field(s) {', '.join(missing)} (strings)"
            )
        prompt = truncate_middle(render(item), max_prompt_bytes)
        reqs.append(Request(len(reqs), prompt, str(item.get("_id", n))))
        if limit and len(reqs) >= limit:
            break
    if not reqs:
        raise InputError(path, "no LongBench v2 items in the file")
    return reqs
