"""Small UI helpers shared by pages."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from studio_backend.errors import StudioError

log = logging.getLogger("studio")


@contextmanager
def guarded(action: str) -> Iterator[None]:
    """Show expected failures as one clear message and never a raw traceback."""
    try:
        yield
    except StudioError as exc:
        st.error(f"{action}: {exc}")
    except Exception as exc:  # noqa: BLE001 - the page must stay usable
        log.exception("%s failed", action)
        st.error(
            f"{action} failed unexpectedly ({type(exc).__name__}: {exc}). "
            "The full traceback is in the studio's server log."
        )


def stack_table(stacks: list[dict[str, object]]) -> list[dict[str, object]]:
    """Hardware stacks as rows for st.dataframe."""
    return [
        {
            "stack": s["name"],
            "available": "yes" if s["available"] else "no",
            "version": s["version"] or "",
            "detail": s["detail"],
        }
        for s in stacks
    ]
