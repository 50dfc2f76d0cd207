"""Seed 004's trace schema: one ``dsa_topk`` record per decode step x request x layer.

Field groups (seed 004's key fields; a record needs every one of them):
  identity  event, request_id, layer_id, step_idx, seq_len_current
  A (top-k) selected_token_pos (optional, at most index_topk), unique_token_pos_count,
            offset_min / offset_p50 / offset_max  (offset = seq_len_current - 1 - position)
  B (block) block_size_tokens, selected_block_ids (sorted, unique), unique_blocks,
            tokens_per_touched_block {mean, p50, p95}
  C (fetch) kv_fetch.{hbm,local_pool,remote_pool}.{hit_blocks,bytes_read,read_ops,latency_us,
            batch_size}
  D (prefix) prefix.{prefix_cache_hit, prefix_cached_blocks, prefix_key, intersection_ratio,
            intersection_blocks}
Optional (checked only when present and not null; ``missing_optional`` names the absent ones):
  run_name, dataset, rank, world_size (our tracer writes them; seed 004 does not list them),
  selected_token_pos, and scores_topk (with --trace-store-scores) else scores_stats.

Validation is plain Python (no torch, no jsonschema) so ``studio dsa selfcheck`` runs anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

EVENT = "dsa_topk"
TIERS = ("hbm", "local_pool", "remote_pool")
TIER_FIELDS = ("hit_blocks", "bytes_read", "read_ops", "latency_us", "batch_size")
TOP_KEYS = (
    "event", "request_id", "layer_id", "step_idx", "seq_len_current", "unique_token_pos_count",
    "offset_min", "offset_p50", "offset_max", "block_size_tokens", "selected_block_ids",
    "unique_blocks", "tokens_per_touched_block", "kv_fetch", "prefix",
)  # fmt: skip
INT_KEYS = (
    "request_id", "layer_id", "step_idx", "seq_len_current", "unique_token_pos_count",
    "offset_min", "offset_p50", "offset_max", "block_size_tokens", "unique_blocks",
)  # fmt: skip
# Optional fields and the type they must have when present (null counts as absent).
OPTIONAL_STR = ("run_name", "dataset")
OPTIONAL_INT = ("rank", "world_size")
# What ``missing_optional`` reports; "scores" is absent when neither scores_topk nor scores_stats
# is there.
OPTIONAL_FIELDS = (*OPTIONAL_STR, *OPTIONAL_INT, "selected_token_pos", "scores")
PREFIX_KEYS = (
    "prefix_cache_hit", "prefix_cached_blocks", "prefix_key", "intersection_ratio",
    "intersection_blocks",
)  # fmt: skip
DIST_KEYS = ("count", "min", "p50", "p95", "max", "mean")
SUMMARY_DISTS = (
    "unique_blocks",
    "tokens_per_touched_block",
    "offsets",
    "prefix_intersection_ratio",
)


def quantile_index(n: int, q: float) -> int:
    """Seed 004's quantile rule on a sorted list: element ``round((n - 1) * q)`` (half to even)."""
    if q <= 0:
        return 0
    if q >= 1:
        return n - 1
    return int(round((n - 1) * q))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(_is_int(x) for x in v)


def validate_record(rec: Any, positions: str = "full") -> list[str]:
    """Every way ``rec`` departs from seed 004's schema (empty list: valid).

    ``positions="types"`` (the ingest): ``selected_token_pos`` must be non-negative integers,
    but is not held against ``seq_len_current``, ``unique_token_pos_count`` and
    ``selected_block_ids``: nothing the ingest stores comes from the positions, and parsing every
    one of them on the fast path doubled the ingest's CPU (docs/SPARSE_ATTENTION.md)."""
    if not isinstance(rec, Mapping):
        return ["record is not a JSON object"]
    errors = [f"missing field {k!r}" for k in TOP_KEYS if k not in rec]
    if errors:
        return errors
    if rec["event"] != EVENT:
        errors.append(f"event is {rec['event']!r}, expected {EVENT!r}")
    for k in OPTIONAL_STR:
        if rec.get(k) is not None and not isinstance(rec[k], str):
            errors.append(f"{k} is not a string")
    for k in OPTIONAL_INT:
        if rec.get(k) is not None and not _is_int(rec[k]):
            errors.append(f"{k} is not an integer")
    errors += [f"{k} is not an integer" for k in INT_KEYS if not _is_int(rec[k])]
    if errors:
        return errors
    blocks = rec["selected_block_ids"]
    if not _int_list(blocks):
        errors.append("selected_block_ids is not a list of integers")
    else:
        if blocks != sorted(set(blocks)):
            errors.append("selected_block_ids is not sorted and unique")
        if rec["unique_blocks"] != len(blocks):
            errors.append("unique_blocks != len(selected_block_ids)")
    if rec["block_size_tokens"] <= 0:
        errors.append("block_size_tokens must be positive")
    if not rec["offset_min"] <= rec["offset_p50"] <= rec["offset_max"]:
        errors.append("offsets not ordered: offset_min <= offset_p50 <= offset_max")
    tpb = rec["tokens_per_touched_block"]
    if not isinstance(tpb, Mapping) or set(tpb) != {"mean", "p50", "p95"}:
        errors.append("tokens_per_touched_block must have exactly mean, p50, p95")
    elif not (_is_num(tpb["mean"]) and _is_int(tpb["p50"]) and _is_int(tpb["p95"])):
        errors.append("tokens_per_touched_block: mean is a number, p50 and p95 are integers")
    errors += _validate_kv_fetch(rec["kv_fetch"])
    errors += _validate_prefix(rec["prefix"], blocks if _int_list(blocks) else [])
    errors += _validate_positions(rec) if positions == "full" else _position_types(rec)
    if rec.get("scores_topk") is not None:
        s = rec["scores_topk"]
        if not isinstance(s, list) or not all(_is_num(x) for x in s):
            errors.append("scores_topk is not a list of numbers")
    if rec.get("scores_stats") is not None:
        s = rec["scores_stats"]
        if not isinstance(s, Mapping) or set(s) != {"min", "mean", "max"}:
            errors.append("scores_stats must have exactly min, mean, max")
        elif not all(_is_num(s[k]) for k in s):
            errors.append("scores_stats values must be numbers")
    return errors


def missing_optional(rec: Mapping[str, Any]) -> list[str]:
    """The optional fields (``OPTIONAL_FIELDS``) a record lacks or holds as null."""
    out = [k for k in OPTIONAL_FIELDS[:-1] if rec.get(k) is None]
    if rec.get("scores_topk") is None and rec.get("scores_stats") is None:
        out.append("scores")
    return out


def _validate_kv_fetch(kv: Any) -> list[str]:
    if not isinstance(kv, Mapping) or set(kv) != set(TIERS):
        return [f"kv_fetch must have exactly the tiers {', '.join(TIERS)}"]
    errors = []
    for tier in TIERS:
        t = kv[tier]
        if not isinstance(t, Mapping) or set(t) != set(TIER_FIELDS):
            errors.append(f"kv_fetch.{tier} must have exactly {', '.join(TIER_FIELDS)}")
            continue
        if not _int_list(t["hit_blocks"]):
            errors.append(f"kv_fetch.{tier}.hit_blocks is not a list of integers")
        for k in ("bytes_read", "read_ops", "batch_size"):
            if not _is_int(t[k]) or t[k] < 0:
                errors.append(f"kv_fetch.{tier}.{k} is not a non-negative integer")
        if t["latency_us"] is not None and not _is_int(t["latency_us"]):
            errors.append(f"kv_fetch.{tier}.latency_us is neither null nor an integer")
    return errors


def _validate_prefix(p: Any, blocks: Sequence[int]) -> list[str]:
    if not isinstance(p, Mapping) or set(p) != set(PREFIX_KEYS):
        return [f"prefix must have exactly {', '.join(PREFIX_KEYS)}"]
    errors = []
    if not isinstance(p["prefix_cache_hit"], bool):
        errors.append("prefix.prefix_cache_hit is not a boolean")
    if not _is_int(p["prefix_cached_blocks"]) or p["prefix_cached_blocks"] < 0:
        errors.append("prefix.prefix_cached_blocks is not a non-negative integer")
    if not isinstance(p["prefix_key"], str):
        errors.append("prefix.prefix_key is not a string")
    if not _is_num(p["intersection_ratio"]) or not 0.0 <= p["intersection_ratio"] <= 1.0:
        errors.append("prefix.intersection_ratio is not a number in [0, 1]")
    inter = p["intersection_blocks"]
    if not _int_list(inter):
        errors.append("prefix.intersection_blocks is not a list of integers")
    elif _is_int(p["prefix_cached_blocks"]) and inter != [
        b for b in blocks if b < p["prefix_cached_blocks"]
    ]:
        errors.append("prefix.intersection_blocks != selected blocks below prefix_cached_blocks")
    return errors


def _position_types(rec: Mapping[str, Any]) -> list[str]:
    pos = rec.get("selected_token_pos")
    if pos is None:
        return []
    if not _int_list(pos) or any(p < 0 for p in pos):
        return ["selected_token_pos is not a list of non-negative integers"]
    return []


def _validate_positions(rec: Mapping[str, Any]) -> list[str]:
    if rec.get("selected_token_pos") is None:
        return []
    pos = rec["selected_token_pos"]
    if not _int_list(pos):
        return ["selected_token_pos is not a list of integers"]
    errors = []
    uniq = sorted(set(pos))
    if uniq and (uniq[0] < 0 or uniq[-1] >= rec["seq_len_current"]):
        errors.append("selected_token_pos outside [0, seq_len_current)")
    if rec["unique_token_pos_count"] != len(uniq):
        errors.append("unique_token_pos_count != number of distinct selected_token_pos")
    bs = rec["block_size_tokens"]
    if bs > 0 and _int_list(rec["selected_block_ids"]):
        if sorted({p // bs for p in uniq}) != rec["selected_block_ids"]:
            errors.append("selected_block_ids != distinct selected_token_pos // block_size_tokens")
    return errors


def validate_summary(summary: Any) -> list[str]:
    """Every way ``summary`` departs from seed 004's ``summary.json`` (empty list: valid)."""
    if not isinstance(summary, Mapping):
        return ["summary is not a JSON object"]
    errors = []
    for k in ("run_name", "dataset", "config", *SUMMARY_DISTS[:3]):
        if k not in summary:
            errors.append(f"missing field {k!r}")
    for k in SUMMARY_DISTS:
        d = summary.get(k)
        if d is None:
            continue
        if not isinstance(d, Mapping) or "count" not in d:
            errors.append(f"{k} is not a distribution with a count")
        elif d["count"] and set(d) != set(DIST_KEYS):
            errors.append(f"{k} must have exactly {', '.join(DIST_KEYS)}")
        elif d["count"] and not d["min"] <= d["p50"] <= d["p95"] <= d["max"]:
            errors.append(f"{k}: min <= p50 <= p95 <= max does not hold")
    hot = summary.get("prefix_hot_blocks", {})
    if not isinstance(hot, Mapping):
        errors.append("prefix_hot_blocks is not an object")
    else:
        for req, items in hot.items():
            if not isinstance(items, list) or len(items) > 20:
                errors.append(f"prefix_hot_blocks[{req}] is not a list of at most 20")
            elif any(set(i) != {"block_id", "touch_count"} for i in items):
                errors.append(f"prefix_hot_blocks[{req}] items need block_id and touch_count")
    serving = summary.get("serving")
    if serving is not None:
        lat = serving.get("latency_ms") if isinstance(serving, Mapping) else None
        if not isinstance(lat, Mapping) or not {"p50", "p95", "p99", "max"} <= set(lat):
            errors.append("serving.latency_ms must have p50, p95, p99, max")
    return errors
