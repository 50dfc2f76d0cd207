"""``studio dsa summarize``: seed 004's ``summary.json`` recomputed from a trace file.

Streams the file (``.jsonl`` or ``.jsonl.gz``); integer distributions are kept as histograms so
quantiles are exact without holding every offset in memory. Bad lines are counted and skipped.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from backend.dsa.schema import OPTIONAL_FIELDS, missing_optional
from backend.dsa.tracer import (
    _add_counts,
    counts_distribution,
    distribution,
    hot_blocks,
    ratio_distribution,
)


def open_text(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every non-blank line; a truncated gzip tail ends it."""
    with open_text(path) as fh:
        n = 0
        try:
            for line in fh:
                n += 1
                if line.strip():
                    yield n, line
        except EOFError:  # a .gz still being written
            return


def summarize_file(path: Path) -> dict[str, Any]:
    unique_blocks: list[int] = []
    tpb = np.zeros(0, np.int64)
    offsets = np.zeros(0, np.int64)
    inter: list[float] = []
    hot: dict[int, dict[int, int]] = {}
    run_name = dataset = ""
    block_size = None
    bad = 0
    missing_positions = 0
    gaps: dict[str, int] = {}
    for _, line in iter_lines(path):
        try:
            rec = orjson.loads(line)
            blocks = rec["selected_block_ids"]
            seq_len = int(rec["seq_len_current"])
            bs = int(rec["block_size_tokens"])
            prefix = rec["prefix"]
            req = int(rec["request_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
            continue
        run_name, dataset, block_size = rec.get("run_name") or "", rec.get("dataset") or "", bs
        for k in missing_optional(rec):
            gaps[k] = gaps.get(k, 0) + 1
        unique_blocks.append(len(blocks))
        pos = rec.get("selected_token_pos")
        if pos is None:
            missing_positions += 1
        else:
            uniq = np.unique(np.asarray(pos, dtype=np.int64))
            uniq = uniq[uniq >= 0]
            tpb = _add_counts(tpb, np.unique(uniq // bs, return_counts=True)[1])
            offsets = _add_counts(offsets, (seq_len - 1) - uniq)
        inter.append(float(prefix["intersection_ratio"]))
        if prefix["intersection_blocks"]:
            h = hot.setdefault(req, {})
            for b in prefix["intersection_blocks"]:
                h[b] = h.get(b, 0) + 1
    out: dict[str, Any] = {
        "run_name": run_name,
        "dataset": dataset,
        "config": {"kv_block_size_tokens": block_size},
        "unique_blocks": distribution(unique_blocks),
        "tokens_per_touched_block": counts_distribution(tpb),
        "offsets": counts_distribution(offsets),
        "prefix_intersection_ratio": ratio_distribution(inter),
        "prefix_hot_blocks": {str(r): hot_blocks(c) for r, c in sorted(hot.items())},
    }
    if bad:
        out["bad_lines"] = bad
    if gaps:
        # seed 004's key fields are all a record needs; say which optional ones were absent
        out["optional_fields_missing"] = {k: gaps[k] for k in OPTIONAL_FIELDS if k in gaps}
    if missing_positions:
        # Without selected_token_pos, token-level distributions cover only records that had it.
        out["records_without_positions"] = missing_positions
    return out
