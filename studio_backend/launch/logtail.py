"""The last lines of a (possibly large, still growing) log file without reading all of it."""

from __future__ import annotations

from pathlib import Path


def tail(path: str | Path, lines: int = 40, max_bytes: int = 256 * 1024) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    text = data.decode("utf-8", errors="replace")
    out = text.splitlines()
    if size > max_bytes and out:
        out = out[1:]  # the first line is probably cut
    return out[-lines:] if lines else out


# The studio's own lines in a server log (written by the supervisor's stop).
STUDIO_MARK = "--- studio: "
STOP_REQUESTED = "stop requested"


def shutdown_part(lines: list[str]) -> list[str]:
    """The lines after the studio's last "stop requested" note: the server's own shutdown
    after a stop from the studio (a traceback there is teardown, not a failure); [] if none."""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(STUDIO_MARK) and STOP_REQUESTED in lines[i]:
            return lines[i + 1 :]
    return []
