"""Outlier statistics of one activation tensor ``[tokens, channels]``.

Thresholds follow the literature (REFERENCE.md section 3): LLM.int8() features at |x| >= 6,
massive activations (Sun et al. 2024) at |x| > 100 and > 1000x the median |x| of their hidden
state (the token's row).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from studio_backend.analysis.lod import as_matrix

INT8_THRESHOLD = 6.0
MASSIVE_ABS = 100.0
MASSIVE_RATIO = 1000.0


def channel_absmax(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-channel max |x| over tokens (SmoothQuant's activation statistic)."""
    return as_matrix(x).abs().amax(dim=0).numpy()


def kurtosis(x: torch.Tensor | np.ndarray, dim: int | None = None) -> np.ndarray | float:
    """Pearson kurtosis E[(x-mu)^4] / var^2 (a Gaussian gives 3), per tensor or along ``dim``.

    Computed in float64: fourth powers of outliers overflow float32 range quickly.
    """
    m = as_matrix(x).double()
    if dim is None:
        m = m.reshape(-1)
        dim = 0
    d = m - m.mean(dim=dim, keepdim=True)
    var = (d**2).mean(dim=dim)
    k = (d**4).mean(dim=dim) / var.clamp_min(1e-300) ** 2
    k = torch.where(var > 0, k, torch.nan)
    return float(k) if k.ndim == 0 else k.numpy()


def massive_mask(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """True where |x| > 100 and |x| > 1000 x median |x| of the same token (row)."""
    a = as_matrix(x).abs()
    med = a.median(dim=1, keepdim=True).values  # lower median, as torch defines it
    return (a > MASSIVE_ABS) & (a > MASSIVE_RATIO * med)


def top_k(x: torch.Tensor | np.ndarray, k: int = 20) -> pd.DataFrame:
    """The ``k`` elements of largest |x|: token, channel, value (ties: lower flat index first)."""
    m = as_matrix(x)
    flat = m.reshape(-1)
    k = min(k, flat.numel())
    # Stable sort on -|x| so equal magnitudes come out in index order (deterministic tables).
    order = torch.argsort(flat.abs(), descending=True, stable=True)[:k]
    return pd.DataFrame(
        {
            "token": (order // m.shape[1]).numpy(),
            "channel": (order % m.shape[1]).numpy(),
            "value": flat[order].numpy().astype(np.float64),
        }
    )


def top_channels(x: torch.Tensor | np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` channels with the largest absmax, largest first."""
    amax = torch.from_numpy(channel_absmax(x))
    return torch.argsort(amax, descending=True, stable=True)[:k].numpy()


@dataclass(frozen=True)
class Summary:
    tokens: int
    channels: int
    absmax: float
    mean_abs: float
    std: float
    kurtosis: float
    over_6: int
    massive: int
    top_channel: int
    top_to_median: float
    nan: int = 0  # NaN elements (an fp16 overflow's trace): max |x| then reads nan
    inf: int = 0  # +-inf elements

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(x: torch.Tensor | np.ndarray) -> Summary:
    """One row of numbers describing a tensor's outliers."""
    m = as_matrix(x)
    a = m.abs()
    amax = a.amax(dim=0)
    med = float(a.median())
    return Summary(
        tokens=int(m.shape[0]),
        channels=int(m.shape[1]),
        absmax=float(a.max()),
        mean_abs=float(a.double().mean()),
        std=float(m.double().std(correction=0)),
        kurtosis=float(kurtosis(m)),
        over_6=int((a > INT8_THRESHOLD).sum()),
        massive=int(massive_mask(m).sum()),
        top_channel=int(torch.argmax(amax)),
        top_to_median=float(a.max()) / med if med > 0 else float("inf"),
        nan=int(torch.isnan(m).sum()) if m.is_floating_point() else 0,
        inf=int(torch.isinf(m).sum()) if m.is_floating_point() else 0,
    )


def non_finite_note(values: pd.Series) -> pd.Series:
    """ "NaN", "+inf" or "-inf" for each non-finite value, "" otherwise (tables show NaN as
    None)."""
    v = values.to_numpy(dtype=np.float64)
    out = np.where(
        np.isnan(v), "NaN", np.where(v == np.inf, "+inf", np.where(v == -np.inf, "-inf", ""))
    )
    return pd.Series(out, index=values.index)


def channel_table(x: torch.Tensor | np.ndarray, k: int = 20) -> pd.DataFrame:
    """The ``k`` channels of largest absmax: where their extreme sits, its value, mean |x|
    (AWQ's statistic) and how many tokens exceed the LLM.int8() threshold."""
    m = as_matrix(x)
    a = m.abs()
    amax, where = a.max(dim=0)
    order = torch.argsort(amax, descending=True, stable=True)[: min(k, m.shape[1])]
    rows = where[order]
    return pd.DataFrame(
        {
            "channel": order.numpy(),
            "absmax": amax[order].numpy().astype(np.float64),
            "token": rows.numpy(),
            "value": m[rows, order].numpy().astype(np.float64),
            "mean_abs": a.double().mean(dim=0)[order].numpy(),
            "tokens_over_6": (a > INT8_THRESHOLD).sum(dim=0)[order].numpy(),
        }
    )
