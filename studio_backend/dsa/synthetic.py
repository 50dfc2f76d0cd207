"""SYNTHETIC top-k selections (seeded) to exercise the tracer, ingest and bench without a model.

Each selection mixes the three patterns sparse attention shows in practice: a few hot blocks at
the start of the prompt (system prompt / attention sinks, shared between requests), a recent
window, and scattered middle positions that drift slowly from step to step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from studio_backend.dsa.prefix import RequestPrefixInfo
from studio_backend.dsa.tracer import TraceConfig, Tracer


def select_positions(
    rng: np.random.Generator, seq_len: int, topk: int, layer: int, anchors: np.ndarray
) -> np.ndarray:
    """``min(topk, seq_len)`` distinct positions below ``seq_len`` (SYNTHETIC)."""
    k = min(topk, seq_len)
    if k == seq_len:
        return rng.permutation(seq_len)
    n_sink = min(k // 4, len(anchors))
    n_recent = min(k // 4, seq_len)
    sink = anchors[:n_sink]
    recent = np.arange(seq_len - n_recent, seq_len)
    taken = np.union1d(sink, recent)
    rest = np.setdiff1d(np.arange(seq_len), taken, assume_unique=True)
    # Later layers look further back: weight by distance to the end, layer-dependent.
    w = np.exp(-(seq_len - rest) / (64.0 * (1 + layer % 8)))
    w = w / w.sum()
    extra = rng.choice(rest, size=k - len(taken), replace=False, p=w)
    return rng.permutation(np.concatenate([taken, extra]))


def generate_trace(
    out_dir: str | Path,
    *,
    requests: int = 4,
    steps: int = 8,
    layers: int = 4,
    topk: int = 64,
    prompt_len: int = 256,
    shared_prefix: int = 64,
    kv_block_size: int = 16,
    seed: int = 0,
    gzip: bool = False,
    store_scores: bool = False,
    dataset: str = "synthetic",
) -> dict[str, Any]:
    """Write a SYNTHETIC ``trace_steps.jsonl`` + ``summary.json`` through the real tracer."""
    rng = np.random.default_rng(seed)
    cfg = TraceConfig(
        out_dir=str(out_dir), kv_block_size_tokens=kv_block_size, store_scores_topk=store_scores,
        gzip=gzip, seed=seed,
    )  # fmt: skip
    tracer = Tracer(cfg)
    tracer.set_run_meta(run_name=Path(out_dir).name, dataset=dataset)
    anchors = rng.permutation(shared_prefix) if shared_prefix else np.zeros(0, np.int64)
    shared_blocks = shared_prefix // kv_block_size
    for r in range(requests):
        hit = r > 0 and shared_blocks > 0
        info = RequestPrefixInfo(hit, shared_blocks if hit else 0, f"synthetic-prefix-{seed}")
        tracer.set_batch([r], [info])
        for s in range(steps):
            pos = prompt_len + s
            tracer.set_step_timing(pos, None)
            for layer in range(layers):
                sel = select_positions(rng, pos + 1, topk, layer, anchors)
                scores = rng.standard_normal(len(sel)).astype(np.float32)
                tracer.record_dsa_topk(
                    layer_id=layer, start_pos=pos, end_pos=pos + 1,
                    topk_indices=sel[None, None, :], topk_scores=scores[None, None, :],
                )  # fmt: skip
            tracer.set_step_timing(pos, int(rng.integers(800, 1200)))
    summary = tracer.close()
    assert summary is not None
    return summary
