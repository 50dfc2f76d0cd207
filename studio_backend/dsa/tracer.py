"""Seed 004's tracer: ``TraceConfig`` / ``Tracer`` / ``TraceWriter`` (torch-free).

The indexer (or any producer) calls ``Tracer.record_dsa_topk`` with the top-k token indices of
one layer for a batch of requests; the tracer derives points A-D of seed 004 and writes one
``trace_steps.jsonl`` line per request. Records of a step are held until the step's wall time is
known (``set_step_timing``) so that ``kv_fetch.hbm.latency_us`` carries it, as in seed 004.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from studio_backend.dsa.prefix import RequestPrefixInfo
from studio_backend.dsa.schema import quantile_index
from studio_backend.dsa.tiers import HbmOnly, TierStats

TRACE_FILE = "trace_steps.jsonl"
SUMMARY_FILE = "summary.json"
HOT_BLOCKS_TOP = 20


@dataclass(frozen=True)
class TraceConfig:
    """Seed 004's options (``--kv-block-size``, ``--trace-store-scores``, ...)."""

    out_dir: str = ""
    enabled: bool = True
    kv_block_size_tokens: int = 16
    store_scores_topk: bool = False
    store_selected_token_pos: bool = True
    sample_rate: float = 1.0
    rank0_only: bool = True
    sync_cuda_for_timing: bool = True
    prefix_cache_key_tokens: int = 256
    max_records_per_file: int = 0  # 0: one file
    kv_bytes_per_token: int = 0
    gzip: bool = False  # write trace_steps.jsonl.gz (flushed per step so it can be tailed)
    decode_only: bool = True  # seed 004 records decode steps only
    seed: int = 0  # step sampling is deterministic given the seed


def _quantile_sorted(values: np.ndarray, q: float) -> int:
    return int(values[quantile_index(len(values), q)]) if len(values) else 0


def distribution(values: np.ndarray | Sequence[int]) -> dict[str, Any]:
    """Seed 004's integer distribution: count, min, p50, p95, max, mean (order statistics by
    partial sort: the same values as a full sort, in linear time)."""
    a = np.asarray(values, dtype=np.int64)
    n = len(a)
    if not n:
        return {"count": 0}
    i50, i95 = quantile_index(n, 0.5), quantile_index(n, 0.95)
    part = np.partition(a, sorted({i50, i95}))
    return {
        "count": int(n),
        "min": int(a.min()),
        "p50": int(part[i50]),
        "p95": int(part[i95]),
        "max": int(a.max()),
        "mean": float(a.sum()) / float(n),
    }


def ratio_distribution(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Seed 004's float distribution (quantiles taken on values truncated to 1e-6)."""
    s = np.sort(np.asarray(values, dtype=np.float64))
    if not len(s):
        return {"count": 0, "min": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0, "mean": 0.0}
    n = len(s)
    lst = s.tolist()  # the mean is Python's sum over the sorted values, as it always was
    return {
        "count": n,
        "min": lst[0],
        "p50": int(lst[quantile_index(n, 0.5)] * 1_000_000) / 1_000_000.0,
        "p95": int(lst[quantile_index(n, 0.95)] * 1_000_000) / 1_000_000.0,
        "max": lst[-1],
        "mean": sum(lst) / n,
    }


def hot_blocks(counter: dict[int, int], top: int = HOT_BLOCKS_TOP) -> list[dict[str, int]]:
    """Top blocks by touch count; ties by ascending block id (deterministic)."""
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"block_id": int(b), "touch_count": int(c)} for b, c in items]


class TraceWriter:
    """Appends records as JSON lines; optional gzip and splitting every N records."""

    def __init__(
        self,
        out_dir: str | Path,
        filename: str = TRACE_FILE,
        max_records_per_file: int = 0,
        compress: bool = False,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.filename = filename + (".gz" if compress and not filename.endswith(".gz") else "")
        self.max_records_per_file = int(max_records_per_file)
        self.compress = compress or self.filename.endswith(".gz")
        self._fh: IO[str] | None = None
        self._in_file = 0
        self._file_idx = 0
        self.total_records = 0
        self.paths: list[Path] = []

    def _open(self) -> IO[str]:
        if self._fh is None:
            name = self.filename
            if self.max_records_per_file > 0:
                stem, _, ext = name.partition(".")
                name = f"{stem}.{self._file_idx:04d}.{ext}"
            path = self.out_dir / name
            self.paths.append(path)
            if self.compress:
                self._fh = gzip.open(path, "at", encoding="utf-8")
            else:
                self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        return self._fh

    def write(self, rec: dict[str, Any]) -> None:
        self._open().write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._in_file += 1
        self.total_records += 1
        if self.max_records_per_file > 0 and self._in_file >= self.max_records_per_file:
            self.close()
            self._in_file = 0
            self._file_idx += 1

    def flush(self) -> None:
        """Make everything written so far readable by a tailing ingest (gzip: a sync flush)."""
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class _Context:
    run_name: str = ""
    dataset: str = ""
    request_ids: list[int] | None = None
    prefix_infos: list[RequestPrefixInfo] | None = None
    step_idx: int | None = None
    step_wall_us: int | None = None
    step_sampled: bool = True


@dataclass
class _Stats:
    unique_blocks: list[int] = field(default_factory=list)
    tpb_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    offset_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    intersection: list[float] = field(default_factory=list)
    hot: dict[int, dict[int, int]] = field(default_factory=dict)


def _add_counts(acc: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Accumulate a histogram of non-negative integers (exact quantiles without keeping values)."""
    counts = np.bincount(values, minlength=len(acc)) if len(values) else np.zeros(0, np.int64)
    if len(counts) > len(acc):
        acc = np.pad(acc, (0, len(counts) - len(acc)))
    acc[: len(counts)] += counts
    return acc


def counts_distribution(counts: np.ndarray) -> dict[str, Any]:
    """``distribution`` of the multiset given as a histogram ``counts[value]``."""
    n = int(counts.sum())
    if n == 0:
        return {"count": 0}
    cum = np.cumsum(counts)
    values = np.arange(len(counts))

    def at(q: float) -> int:
        return int(np.searchsorted(cum, quantile_index(n, q) + 1))

    nz = np.flatnonzero(counts)
    return {
        "count": n,
        "min": int(nz[0]),
        "p50": at(0.5),
        "p95": at(0.95),
        "max": int(nz[-1]),
        "mean": float((counts * values).sum()) / n,
    }


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


class Tracer:
    """Seed 004's tracer; ``enabled`` is False on ranks other than 0 when ``rank0_only``."""

    def __init__(
        self,
        cfg: TraceConfig,
        *,
        tiers: TierStats | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.cfg = cfg
        self.rank = rank
        self.world_size = world_size
        self.tiers = tiers or HbmOnly(bytes_per_token=cfg.kv_bytes_per_token)
        self.ctx = _Context()
        self.stats = _Stats()
        self.serving: dict[str, Any] | None = None
        self._rng = random.Random(cfg.seed)
        self._pending: list[dict[str, Any]] = []
        self.writer = (
            TraceWriter(
                cfg.out_dir, max_records_per_file=cfg.max_records_per_file, compress=cfg.gzip
            )
            if self.enabled
            else None
        )

    @property
    def enabled(self) -> bool:
        return self.cfg.enabled and not (self.cfg.rank0_only and self.rank != 0)

    def set_run_meta(self, run_name: str = "", dataset: str = "") -> None:
        self.ctx.run_name, self.ctx.dataset = run_name, dataset

    def set_batch(
        self,
        request_ids: Sequence[int],
        prefix_infos: Sequence[RequestPrefixInfo] | None = None,
    ) -> None:
        self.ctx.request_ids = [int(r) for r in request_ids]
        self.ctx.prefix_infos = None if prefix_infos is None else list(prefix_infos)

    def set_step_timing(self, step_idx: int, step_wall_us: int | None) -> None:
        """Call with ``None`` before a step's forward and with its wall time after it."""
        if step_wall_us is None:
            self.ctx.step_idx = int(step_idx)
            self.ctx.step_wall_us = None
            # Sampling is per decode step so a sampled step keeps all its layers.
            self.ctx.step_sampled = (
                self.cfg.sample_rate >= 1.0 or self._rng.random() < self.cfg.sample_rate
            )
            return
        self.ctx.step_wall_us = int(step_wall_us)
        for rec in self._pending:
            rec["kv_fetch"]["hbm"]["latency_us"] = int(step_wall_us)
            self._write(rec)
        self._pending.clear()
        if self.writer is not None:
            self.writer.flush()

    def _write(self, rec: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(rec)

    def record_dsa_topk(
        self,
        *,
        layer_id: int,
        start_pos: int,
        end_pos: int,
        topk_indices: Any,
        topk_scores: Any = None,
    ) -> None:
        """Record one layer's top-k selection: indices ``[bsz, seqlen, k]`` or ``[bsz, k]``."""
        if not self.enabled or not self.ctx.step_sampled:
            return
        idx = _as_numpy(topk_indices)
        if idx.ndim == 2:
            idx = idx[:, None, :]
        if self.cfg.decode_only and idx.shape[1] != 1:
            return
        scores = None if topk_scores is None else _as_numpy(topk_scores)
        if scores is not None and scores.ndim == 2:
            scores = scores[:, None, :]
        bsz = idx.shape[0]
        ids = (
            self.ctx.request_ids
            if self.ctx.request_ids and len(self.ctx.request_ids) == bsz
            else list(range(bsz))
        )
        infos = (
            self.ctx.prefix_infos
            if self.ctx.prefix_infos and len(self.ctx.prefix_infos) == bsz
            else None
        )
        for b in range(bsz):
            sel = idx[b, -1].astype(np.int64)
            keep = sel >= 0  # -1 pads positions beyond the context (short prompts)
            rec = self.build_record(
                request_id=int(ids[b]),
                layer_id=int(layer_id),
                step_idx=int(start_pos),
                seq_len=int(end_pos),
                selected=sel[keep],
                scores=None if scores is None else scores[b, -1].astype(np.float64)[keep],
                prefix=infos[b] if infos else None,
            )
            if self.ctx.step_wall_us is None and self.ctx.step_idx is not None:
                self._pending.append(rec)
            else:
                rec["kv_fetch"]["hbm"]["latency_us"] = self.ctx.step_wall_us
                self._write(rec)

    def build_record(
        self,
        *,
        request_id: int,
        layer_id: int,
        step_idx: int,
        seq_len: int,
        selected: np.ndarray,
        scores: np.ndarray | None,
        prefix: RequestPrefixInfo | None,
    ) -> dict[str, Any]:
        """One seed-004 record (also accumulates the summary statistics)."""
        bs = int(self.cfg.kv_block_size_tokens)
        uniq = np.unique(selected)
        offsets = (seq_len - 1) - uniq[::-1]  # ascending
        blocks, tpb = np.unique(uniq // bs, return_counts=True)
        tpb_sorted = np.sort(tpb)
        block_list = blocks.tolist()
        cached = prefix.prefix_cached_blocks if prefix else 0
        inter = [b for b in block_list if b < cached]
        ratio = len(inter) / len(block_list) if block_list else 0.0
        rec: dict[str, Any] = {
            "event": "dsa_topk",
            "run_name": self.ctx.run_name,
            "dataset": self.ctx.dataset,
            "rank": self.rank,
            "world_size": self.world_size,
            "request_id": request_id,
            "layer_id": layer_id,
            "step_idx": step_idx,
            "seq_len_current": seq_len,
            "unique_token_pos_count": int(len(uniq)),
            "offset_min": int(offsets[0]) if len(offsets) else 0,
            "offset_p50": _quantile_sorted(offsets, 0.5),
            "offset_max": int(offsets[-1]) if len(offsets) else 0,
            "block_size_tokens": bs,
            "selected_block_ids": block_list,
            "unique_blocks": len(block_list),
            "tokens_per_touched_block": {
                "mean": float(tpb.mean()) if len(tpb) else 0.0,
                "p50": _quantile_sorted(tpb_sorted, 0.5),
                "p95": _quantile_sorted(tpb_sorted, 0.95),
            },
            "kv_fetch": self.tiers.fetch(
                request_id=request_id, layer_id=layer_id, block_ids=block_list, block_size=bs
            ),
            "prefix": {
                "prefix_cache_hit": bool(prefix.prefix_cache_hit) if prefix else False,
                "prefix_cached_blocks": int(cached),
                "prefix_key": prefix.prefix_key if prefix else "",
                "intersection_ratio": ratio,
                "intersection_blocks": inter,
            },
        }
        if self.cfg.store_selected_token_pos:
            rec["selected_token_pos"] = selected.tolist()
        if scores is not None and len(scores):
            if self.cfg.store_scores_topk:
                rec["scores_topk"] = scores.tolist()
            else:
                rec["scores_stats"] = {
                    "min": float(scores.min()),
                    "mean": float(scores.mean()),
                    "max": float(scores.max()),
                }
        st = self.stats
        st.unique_blocks.append(len(block_list))
        st.tpb_counts = _add_counts(st.tpb_counts, tpb)
        st.offset_counts = _add_counts(st.offset_counts, offsets)
        st.intersection.append(ratio)
        if inter:
            hot = st.hot.setdefault(request_id, {})
            for blk in inter:
                hot[blk] = hot.get(blk, 0) + 1
        return rec

    def set_serving(self, latencies_ms: Sequence[float], **extra: Any) -> None:
        """BurstGPT replay: request latencies -> ``serving.latency_ms{p50,p95,p99,max}``."""
        self.serving = serving_summary(latencies_ms, **extra)

    def get_summary(self) -> dict[str, Any]:
        cfg = asdict(self.cfg)
        for k in ("out_dir", "enabled", "seed"):
            cfg.pop(k)
        out: dict[str, Any] = {
            "run_name": self.ctx.run_name,
            "dataset": self.ctx.dataset,
            "config": cfg,
            "unique_blocks": distribution(self.stats.unique_blocks),
            "tokens_per_touched_block": counts_distribution(self.stats.tpb_counts),
            "offsets": counts_distribution(self.stats.offset_counts),
            "prefix_intersection_ratio": ratio_distribution(self.stats.intersection),
            "prefix_hot_blocks": {str(r): hot_blocks(c) for r, c in sorted(self.stats.hot.items())},
        }
        if self.serving is not None:
            out["serving"] = self.serving
        return out

    def close(self, write_summary: bool = True) -> dict[str, Any] | None:
        """Flush pending records, close the file and write ``summary.json``."""
        if not self.enabled or self.writer is None:
            return None
        for rec in self._pending:
            self._write(rec)
        self._pending.clear()
        self.writer.close()
        summary = self.get_summary()
        if write_summary:
            path = Path(self.cfg.out_dir) / SUMMARY_FILE
            path.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
        return summary


def serving_summary(latencies_ms: Sequence[float], **extra: Any) -> dict[str, Any]:
    s = sorted(float(v) for v in latencies_ms)

    def q(p: float) -> float:
        return s[quantile_index(len(s), p)] if s else 0.0

    return {
        "requests": len(s),
        "latency_ms": {"p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": s[-1] if s else 0.0},
        **extra,
    }
