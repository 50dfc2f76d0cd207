"""``studio dsa summarize``: seed 004's ``summary.json`` recomputed from a trace file.

Streams the file (``.jsonl`` or ``.jsonl.gz``); integer distributions are kept as histograms so
quantiles are exact without holding every offset in memory. Lines failing the schema
(``schema.validate_record``, as in ``studio dsa ingest``) are counted and skipped; a truncated
gzip is reported in the summary's ``truncated``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from studio_backend.dsa.schema import OPTIONAL_FIELDS, missing_optional, validate_record
from studio_backend.dsa.tracer import (
    _add_counts,
    counts_distribution,
    distribution,
    hot_blocks,
    ratio_distribution,
)


def iter_lines(path: Path, notes: dict[str, Any]) -> Iterator[bytes]:
    """Every non-blank line, the last one even without its newline (``ingest.TailReader``: the
    same reading as ``studio dsa ingest``). A truncated or corrupt gzip ends the lines and puts
    the reason in ``notes["truncated"]``; a file that is not gzip at all is an InputError."""
    from studio_backend.dsa.ingest import TailReader

    reader = TailReader(path)
    while True:
        data, _ = reader.read()
        if not data:
            break
        yield from (line for line in data.splitlines() if line.strip())
    tail, _ = reader.read_tail()
    if tail:
        yield tail
    if (why := reader.truncated()) is not None:
        notes["truncated"] = why


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
    notes: dict[str, Any] = {}
    for line in iter_lines(path, notes):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        # The schema check of `studio dsa ingest`: wrong types and out-of-range numbers (2^70)
        # are bad lines here too, never an exception in the arithmetic below.
        if validate_record(rec):
            bad += 1
            continue
        blocks, prefix = rec["selected_block_ids"], rec["prefix"]
        seq_len, bs, req = rec["seq_len_current"], rec["block_size_tokens"], rec["request_id"]
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
    if "truncated" in notes:
        out["truncated"] = notes["truncated"]
    if gaps:
        # seed 004's key fields are all a record needs; say which optional ones were absent
        out["optional_fields_missing"] = {k: gaps[k] for k in OPTIONAL_FIELDS if k in gaps}
    if missing_positions:
        # Without selected_token_pos, token-level distributions cover only records that had it.
        out["records_without_positions"] = missing_positions
    return out
