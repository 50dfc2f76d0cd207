"""``ranks.json``: which rank each rank folder of a dump holds (msit on CPU names folders
``cpu_<pid>``, so the order must come from elsewhere).

Accepted shapes (anything else is an ``InputError`` naming the file):
  ["cpu_4000", "cpu_4001"]                        list: position = rank
  {"cpu_4000": 0, "cpu_4001": 1}                  folder -> rank
  {"ranks": <either of the above>}
  {"ranks": {"cpu_4000": {"rank": 0, ...}, ...}}  folder -> object with an integer "rank"
Other keys beside "ranks" (world_size, tp_size, ...) are allowed and ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError

SHAPES = (
    'a list of rank folders, {"folder": rank}, {"ranks": {"folder": rank}} or'
    ' {"ranks": {"folder": {"rank": r, ...}}}'
)


def _rank(path: Path, folder: str, value: Any) -> int:
    if isinstance(value, dict):
        if "rank" not in value:
            raise InputError(path, f"entry {folder!r} has no 'rank' (expected {SHAPES})")
        value = value["rank"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(
            path, f"rank of {folder!r} is {value!r}, not a non-negative integer (expected {SHAPES})"
        )
    return value


def parse_ranks(path: Path, data: Any) -> dict[str, int]:
    """Folder -> rank from the parsed JSON ``data`` of ``path``."""
    if isinstance(data, dict) and "ranks" in data:
        data = data["ranks"]
    if isinstance(data, list):
        if not all(isinstance(n, str) for n in data):
            raise InputError(path, f"a list must hold folder names (strings); expected {SHAPES}")
        if len(set(data)) != len(data):
            raise InputError(path, "a folder is listed twice")
        return {n: i for i, n in enumerate(data)}
    if isinstance(data, dict) and data:
        ranks = {str(k): _rank(path, str(k), v) for k, v in data.items()}
        if len(set(ranks.values())) != len(ranks):
            raise InputError(path, f"two folders claim the same rank: {ranks}")
        return ranks
    raise InputError(path, f"unrecognised ranks.json ({type(data).__name__}); expected {SHAPES}")


def find_ranks(start: Path, up: int = 3) -> dict[str, int] | None:
    """The ranks.json in ``start`` or up to ``up`` parents, parsed; None when there is none."""
    for p in [start, *list(start.parents)[:up]]:
        f = p / "ranks.json"
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(f, f"unreadable JSON ({exc})") from exc
            return parse_ranks(f, data)
    return None
