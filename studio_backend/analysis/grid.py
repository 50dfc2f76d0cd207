"""The pooled token x channel grid (numpy only: render workers unpickle it without torch)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A (possibly pooled) token x channel grid ready to plot.

    ``values[i, j]`` is the signed extreme of its block after the value transform;
    ``tokens[i, j]`` / ``channels[i, j]`` the original token and channel of that extreme;
    ``token_axis`` / ``channel_axis`` the first original token / channel position of each block
    (channel positions are ranks when channels are sorted).
    """

    values: np.ndarray
    raw: np.ndarray
    tokens: np.ndarray
    channels: np.ndarray
    token_axis: np.ndarray
    channel_axis: np.ndarray
    pooled: bool
    source_shape: tuple[int, int]
