"""Starting child processes safely from inside the studio.

Streamlit runs each page as a fresh module installed as ``sys.modules['__main__']`` with the
page's ``__file__``. A ``spawn`` child re-executes the parent's ``__main__`` from that path before
running its target, so a process pool or engine rank started from a page (or from a test that
ran a page through AppTest) would re-run the page script in the child. Wrapping the process
starts in :func:`clean_main_for_spawn` hides such a borrowed ``__main__``; a genuine entry
script (``python bench/x.py``) is left alone so its own functions stay importable.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager


def _borrowed_main(module: types.ModuleType | None) -> bool:
    path = getattr(module, "__file__", None)
    if module is None or path is None or getattr(module, "__spec__", None) is not None:
        return False
    entry = sys.argv[0] if sys.argv else ""
    return os.path.abspath(path) != os.path.abspath(entry)


@contextmanager
def clean_main_for_spawn(*, always: bool = False) -> Iterator[None]:
    """While active, spawned children do not re-run a ``__main__`` borrowed by Streamlit.

    ``always``: hide any ``__main__``, an entry script's too (for workers whose target lives in
    a package module: they then skip importing the entry script and everything it imports).
    """
    main = sys.modules.get("__main__")
    if main is None or not (always or _borrowed_main(main)):
        yield
        return
    stub = types.ModuleType("__main__")
    sys.modules["__main__"] = stub
    try:
        yield
    finally:
        if sys.modules.get("__main__") is stub:
            sys.modules["__main__"] = main
