"""Workloads for DSA traces, from local files only: ShareGPT JSON, BurstGPT CSV, needle prompts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    request_id: int
    prompt: str
    conversation: str = ""
    arrival_s: float = 0.0  # BurstGPT replay
    max_new_tokens: int | None = None


def byte_tokens(text: str, limit: int | None = None) -> list[int]:
    """Byte-level token ids (the tiny model's vocabulary): shared text -> shared token prefix."""
    ids = list(text.encode("utf-8"))
    return ids[-limit:] if limit else ids
