"""Colours and Plotly defaults shared by every figure."""

from __future__ import annotations

import plotly.io as pio

ACCENT = "#0f6cbd"
GOOD = "#107c10"
WARN = "#c19c00"
BAD = "#c50f1f"
VERDICT_COLOURS = {"verified": GOOD, "assumed": WARN, "failed": BAD, "unknown": "#8a8886"}
SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"

pio.templates.default = "plotly_white"
