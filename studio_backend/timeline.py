"""Opt-in phase marks for timing a whole command (``bench/render_cli.py``).

With ``STUDIO_TIMELINE_T0`` set (a ``time.time()`` taken by whoever started the command), each
:func:`mark` prints ``timeline <seconds since T0> <pid> <what>`` to stderr; without it, a mark
costs one dictionary lookup. Child processes inherit the variable, so workers' marks line up
with their parent's on the same clock.
"""

from __future__ import annotations

import os
import sys
import time

_T0 = os.environ.get("STUDIO_TIMELINE_T0")


def mark(what: str) -> None:
    if _T0 is None:
        return
    print(f"timeline {time.time() - float(_T0):7.3f} {os.getpid()} {what}", file=sys.stderr,
          flush=True)  # fmt: skip
