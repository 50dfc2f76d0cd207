"""Which vLLM module layout the reference engine builds (model.py says what each one is)."""

from __future__ import annotations

import os

from studio_backend.errors import InputError

LAYOUTS = ("vllm", "fused_moe")  # current vLLM (0.32) | older FusedMoE partial-sum layout
LAYOUT_ENV = "STUDIO_REFERENCE_LAYOUT"


def resolve_layout(layout: str | None = None) -> str:
    """The layout asked for, else ``$STUDIO_REFERENCE_LAYOUT``, else ``vllm``."""
    chosen = layout or os.environ.get(LAYOUT_ENV) or "vllm"
    if chosen not in LAYOUTS:
        raise InputError(chosen, f"unknown engine layout (choose from {', '.join(LAYOUTS)})")
    return chosen
