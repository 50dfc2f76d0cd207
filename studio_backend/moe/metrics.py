"""Balance metrics of expert load, each with the definition the studio shows next to it.

Inputs are plain arrays: ``expert_load[layer, expert]`` (tokens routed to each logical expert)
and ``device_load[layer, device]`` (tokens processed by each device's physical slots).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# SGLang adds this to numerator and denominator (eplb/expert_distribution.py compute_utilization_rate)
SGLANG_EPS = 1e-5

DEFINITIONS: dict[str, str] = {
    "balancedness": "mean / max of per-device token counts in the layer (1.0 = perfectly even; "
    "SGLang and vLLM call this balancedness)",
    "peak_to_avg": "max / mean of per-device token counts in the layer (1.0 = even; vllm-ascend "
    "logs this peak-to-average ratio)",
    "max_minus_min": "max - min of per-device token counts in the layer (msprof-analyze style)",
    "cv": "coefficient of variation of per-expert counts: population std / mean (0 = even)",
    "entropy": "normalised entropy of the per-expert share p_e: -sum p_e ln p_e / ln E "
    "(1 = uniform, 0 = one expert takes everything)",
    "topk_share": "share of the layer's routed tokens taken by its k most loaded experts "
    "(k = the model's experts per token unless chosen; uniform = k/E)",
    "sglang_balancedness": "SGLang: per layer (mean+1e-5)/(max+1e-5) of per-device counts, "
    "averaged over layers",
    "vllm_balancedness": "vLLM EPLB log: sum over layers of mean per-device count / sum over "
    "layers of max per-device count",
    "mean_peak_to_avg": "vllm-ascend style: per-layer max/mean of per-device counts, averaged "
    "over layers",
}


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def entropy_norm(expert_load: np.ndarray) -> np.ndarray:
    """Normalised entropy along the last axis (NaN where a row has no load)."""
    x = np.asarray(expert_load, dtype=np.float64)
    total = x.sum(axis=-1, keepdims=True)
    p = _safe_div(x, np.broadcast_to(total, x.shape))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1)), 0.0)
    h = terms.sum(axis=-1)
    e = x.shape[-1]
    out = h / np.log(e) if e > 1 else np.zeros_like(h)
    return np.where(total[..., 0] > 0, out, np.nan)


def topk_share(expert_load: np.ndarray, k: int) -> np.ndarray:
    """Share of load on the ``k`` most loaded experts along the last axis."""
    x = np.asarray(expert_load, dtype=np.float64)
    k = max(1, min(int(k), x.shape[-1]))
    top = -np.sort(-x, axis=-1)[..., :k].sum(axis=-1)
    return _safe_div(top, x.sum(axis=-1))


def layer_metrics(
    expert_load: np.ndarray,
    device_load: np.ndarray,
    top_k: int,
    layers: list[int] | None = None,
) -> pd.DataFrame:
    """One row per layer with every per-layer metric of ``DEFINITIONS``."""
    el = np.asarray(expert_load, dtype=np.float64)
    dl = np.asarray(device_load, dtype=np.float64)
    mean_d, max_d, min_d = dl.mean(axis=-1), dl.max(axis=-1), dl.min(axis=-1)
    mean_e = el.mean(axis=-1)
    return pd.DataFrame(
        {
            "layer": layers if layers is not None else list(range(el.shape[0])),
            "tokens": el.sum(axis=-1),
            "balancedness": _safe_div(mean_d, max_d),
            "peak_to_avg": _safe_div(max_d, mean_d),
            "max_minus_min": max_d - min_d,
            "cv": _safe_div(el.std(axis=-1), mean_e),
            "entropy": entropy_norm(el),
            "topk_share": topk_share(el, top_k),
        }
    )


def model_summary(device_load: np.ndarray) -> dict[str, float]:
    """Whole-model balance as SGLang, vLLM and vllm-ascend report it (see ``DEFINITIONS``)."""
    dl = np.asarray(device_load, dtype=np.float64)
    mean_d, max_d = dl.mean(axis=-1), dl.max(axis=-1)
    sglang = float(np.mean((mean_d + SGLANG_EPS) / (max_d + SGLANG_EPS)))
    vllm = float(mean_d.sum() / max_d.sum()) if max_d.sum() > 0 else 0.0
    p2a = _safe_div(max_d, mean_d)
    return {
        "sglang_balancedness": sglang,
        "vllm_balancedness": vllm,
        "mean_peak_to_avg": float(np.nanmean(p2a)) if np.isfinite(p2a).any() else float("nan"),
    }
