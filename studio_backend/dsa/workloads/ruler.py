"""RULER task files (NVIDIA/RULER ``scripts/data/prepare.py``) as requests.

Published format: one JSON object per line (``<save_dir>/<task>/<subset>.jsonl``) with
``index``, ``input`` (the templated prompt up to the answer prefix), ``outputs`` (list of
reference answers), ``length`` (tokens) and, in current releases, ``length_w_model_temp``,
``answer_prefix`` (the end of the template that prepare.py cut off, e.g. " The special magic
number for ... is") and ``token_position_answer``. The prompt sent is ``input + answer_prefix``.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from studio_backend.dsa.workloads import Request, truncate_middle
from studio_backend.errors import InputError


def load_ruler(path: Path, limit: int = 0, max_prompt_bytes: int = 0) -> list[Request]:
    """Requests from a RULER ``.jsonl`` (``conversation`` = ``ruler-<index>``); prompts longer
    than ``max_prompt_bytes`` lose their middle."""
    reqs: list[Request] = []
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(path, f"cannot read RULER file ({exc})") from exc
    with fh:
        for no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(
                    path, f"line {no} is not JSON ({exc}); RULER files are JSONL"
                ) from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("input"), str):
                raise InputError(path, f"line {no} has no string 'input' (not a RULER sample)")
            prefix = rec.get("answer_prefix") or ""
            if not isinstance(prefix, str):
                raise InputError(path, f"line {no}: answer_prefix is not a string")
            prompt = truncate_middle(rec["input"] + prefix, max_prompt_bytes)
            reqs.append(Request(len(reqs), prompt, f"ruler-{rec.get('index', no - 1)}"))
            if limit and len(reqs) >= limit:
                break
    if not reqs:
        raise InputError(path, "no RULER samples in the file")
    return reqs
