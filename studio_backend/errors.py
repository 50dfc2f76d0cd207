"""Errors the studio shows to a person: one line saying what is wrong and what to do."""

from __future__ import annotations


class StudioError(Exception):
    """An expected failure with an actionable message (never shown with a traceback)."""


class WorkspaceBusyError(StudioError):
    """The workspace is held by another process (usually a running studio)."""


class InputError(StudioError):
    """Bad user input: names the file (or value) and what is wrong with it."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
