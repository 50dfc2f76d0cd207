"""Kernel tests run Triton in its CPU interpreter: the flag must be set before any
``@triton.jit`` kernel module is imported (Triton reads it at decoration time)."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
