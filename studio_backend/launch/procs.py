"""Linux process facts read from /proc: liveness, start time, process-group members."""

from __future__ import annotations

import os
from pathlib import Path

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is parenthesised and may hold spaces: split after it.
    tail = raw[raw.rindex(")") + 2 :].split()
    return tail  # tail[0] is field 3 (state)


def state(pid: int) -> str | None:
    """One-letter process state ('R', 'S', 'Z', ...) or None when there is no such process."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot (field 22): with the PID it names one process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def pgid_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[2]) if fields else None


def alive(pid: int, expected_start: int | None = None) -> bool:
    """True for a running (non-zombie) process, and the same one when a start time is given."""
    st = state(pid)
    if st is None or st in ("Z", "X"):
        return False
    return expected_start is None or start_time(pid) == expected_start


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return sorted(members)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True
