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


def truncate_middle(text: str, max_bytes: int) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes by dropping its middle (LongBench's
    pred.py rule: both ends may hold the instructions and the question)."""
    raw = text.encode("utf-8")
    if max_bytes <= 0 or len(raw) <= max_bytes:
        return text
    half = max_bytes // 2
    head = raw[:half].decode("utf-8", errors="ignore")
    tail = raw[len(raw) - (max_bytes - half) :].decode("utf-8", errors="ignore")
    return head + tail
