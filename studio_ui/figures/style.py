"""Colours and axis titles shared by the Plotly and PyVista surfaces (no heavy imports: the
PNG render workers load this without plotly)."""

from __future__ import annotations

# Near zero sits a mid grey, not white: most of a tensor is near zero and must stay visible on
# a white page, with blue (negative) and red (positive) outliers standing out of it.
DIVERGING_GREY = [
    [0.0, "#053061"], [0.2, "#2166ac"], [0.4, "#92c5de"], [0.5, "#b4b4b4"],
    [0.6, "#f4a582"], [0.8, "#b2182b"], [1.0, "#67001f"],
]  # fmt: skip
# Plotly's "Viridis" (plotly.colors.sequential.Viridis), the |x| scale of every renderer.
VIRIDIS = [
    [i / 9, c] for i, c in enumerate(
        ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
         "#b5de2b", "#fde725"]
    )
]  # fmt: skip


def value_label(absolute: bool, log: bool) -> str:
    """The value axis title: value, |value|, log10(1+|value|) or its signed form."""
    if log:
        return "log10(1+|value|)" if absolute else "sign * log10(1+|value|)"
    return "|value|" if absolute else "value"


def whole_ticks(lo: float, hi: float, most: int = 16) -> dict:
    """Axis settings for integer data (layers, experts, steps): ticks on whole numbers only
    (Plotly's own ticks on a short range read 0, 0.5, 1, 1.5)."""
    span = max(float(hi) - float(lo), 0.0)
    step = max(1, int(-(-(span + 1) // most)))
    return {"tickmode": "linear", "tick0": float(lo), "dtick": step, "tickformat": "d"}
