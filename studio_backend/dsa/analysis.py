"""Analyses of ingested DSA traces (DuckDB SQL + numpy); they return data and never draw.

Per-request analyses read the ``dsa_block_heat`` aggregate (block x step with a bit mask of the
selecting layers) or one request's rows of ``dsa_steps``; trace-wide ones read scalar columns.
A KV block here is (request, block_id) over all layers, as in a paged KV cache whose block
holds every layer's KV for ``block_size`` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from studio_backend.dsa import replay
from studio_backend.dsa.tracer import distribution, hot_blocks, ratio_distribution
from studio_backend.workspace import Workspace

TIERS = ("hbm", "local", "remote")


def _q(ws: Workspace, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
    return ws.cursor().execute(sql, params).df()


def list_traces(ws: Workspace, kind: str | None = None) -> pd.DataFrame:
    sql = (
        "SELECT trace_id, name, kind, run_name, dataset, block_size, rows, bad_lines,"
        " lines_read, path, updated_at FROM dsa_traces"
    )
    if kind:
        return _q(ws, sql + " WHERE kind = ? ORDER BY created_at", [kind])
    return _q(ws, sql + " ORDER BY created_at")


def trace_summary_json(ws: Workspace, trace_id: str) -> dict[str, Any] | None:
    row = (
        ws.cursor()
        .execute("SELECT summary FROM dsa_traces WHERE trace_id = ?", [trace_id])
        .fetchall()[0]
    )
    return json.loads(row[0]) if row and row[0] else None


def field_gaps(ws: Workspace, trace_id: str) -> dict[str, int]:
    """Optional seed-004 field -> ingested records lacking it (none: every record has it)."""
    from studio_backend.dsa.ingest import missing_fields

    return missing_fields(ws, trace_id)


def bad_lines(ws: Workspace, trace_id: str, limit: int = 50) -> pd.DataFrame:
    return _q(
        ws,
        "SELECT line_no, error FROM dsa_bad_lines WHERE trace_id = ? ORDER BY line_no LIMIT ?",
        [trace_id, limit],
    )


def requests(ws: Workspace, trace_id: str) -> pd.DataFrame:
    """One row per request: rows, decode steps, layers, prefix blocks, mean intersection."""
    return _q(
        ws,
        "SELECT request_id, count(*) AS records, count(DISTINCT step_idx) AS steps,"
        " count(DISTINCT layer_id) AS layers, max(prefix_cached_blocks) AS prefix_cached_blocks,"
        " bool_or(prefix_hit) AS prefix_hit, avg(intersection_ratio) AS mean_intersection,"
        " max(seq_len) AS max_seq_len FROM dsa_steps WHERE trace_id = ?"
        " GROUP BY request_id ORDER BY request_id",
        [trace_id],
    )


def layer_span(ws: Workspace, trace_id: str) -> tuple[int, int]:
    lo, hi = (
        ws.cursor()
        .execute(
            "SELECT min(layer_id), max(layer_id) FROM dsa_steps WHERE trace_id = ?", [trace_id]
        )
        .fetchall()[0]
    )
    return (int(lo or 0), int(hi or 0))


def _masks(layer_lo: int, layer_hi: int) -> tuple[int, int]:
    bits = [1 << i for i in range(max(layer_lo, 0), min(layer_hi, 127) + 1)]
    m = sum(bits)
    return m & ((1 << 64) - 1), m >> 64


_HEAT = """
SELECT step_idx, block_id,
       bit_count(bit_or(mask_lo) & $mlo::UBIGINT) + bit_count(bit_or(mask_hi) & $mhi::UBIGINT)
         AS layers
FROM dsa_block_heat WHERE trace_id = $trace AND request_id = $req
GROUP BY step_idx, block_id HAVING layers > 0
"""


def heatmap(
    ws: Workspace, trace_id: str, request_id: int, layer_lo: int, layer_hi: int
) -> pd.DataFrame:
    """(step_idx, block_id, layers): how many layers in [lo, hi] selected the block."""
    mlo, mhi = _masks(layer_lo, layer_hi)
    return _q(
        ws,
        _HEAT + " ORDER BY step_idx, block_id",
        {"mlo": mlo, "mhi": mhi, "trace": trace_id, "req": int(request_id)},
    )


def record_distributions(ws: Workspace, trace_id: str) -> dict[str, dict[str, Any]]:
    """Seed-004 style distributions of per-record values (unique blocks, tpb, offsets)."""
    df = _q(
        ws,
        "SELECT unique_blocks, tpb_p50, tpb_p95, offset_p50, offset_max, intersection_ratio"
        " FROM dsa_steps WHERE trace_id = ?",
        [trace_id],
    )
    out = {c: distribution(df[c].to_numpy()) for c in df.columns if c != "intersection_ratio"}
    out["intersection_ratio"] = ratio_distribution(df["intersection_ratio"].to_numpy())
    return out


def value_counts(ws: Workspace, trace_id: str, column: str, bins: int = 0) -> pd.DataFrame:
    """(value, n) for a per-record column; ``bins`` > 0 groups values into equal-width bins."""
    allowed = {
        "unique_blocks", "tpb_mean", "tpb_p50", "tpb_p95", "offset_min", "offset_p50",
        "offset_max", "intersection_ratio", "unique_tokens", "seq_len",
    }  # fmt: skip
    if column not in allowed:
        raise ValueError(f"unknown column {column}")
    if bins <= 0:
        return _q(
            ws,
            f"SELECT {column} AS value, count(*) AS n FROM dsa_steps WHERE trace_id = ?"  # noqa: S608
            " GROUP BY 1 ORDER BY 1",
            [trace_id],
        )
    return _q(
        ws,
        f"""WITH r AS (SELECT min({column}) lo, max({column}) hi FROM dsa_steps
                       WHERE trace_id = $t)
        SELECT r.lo + (least(floor(({column} - r.lo) / greatest((r.hi - r.lo) / $b, 1e-12)),
                             $b - 1) + 0.5) * greatest((r.hi - r.lo) / $b, 1e-12) AS value,
               count(*) AS n
        FROM dsa_steps, r WHERE trace_id = $t GROUP BY 1 ORDER BY 1""",  # noqa: S608
        {"t": trace_id, "b": bins},
    )


def prefix_hot_blocks(
    ws: Workspace, trace_id: str, request_id: int | None = None, top: int = 20
) -> dict[str, list[dict[str, int]]]:
    """Seed 004's ``prefix_hot_blocks``: per request, the most touched blocks in its prefix."""
    where = "" if request_id is None else " AND h.request_id = $req"
    params: dict[str, Any] = {"trace": trace_id}
    if request_id is not None:
        params["req"] = int(request_id)
    df = _q(
        ws,
        f"""WITH p AS (SELECT request_id, max(prefix_cached_blocks) AS cached FROM dsa_steps
                      WHERE trace_id = $trace GROUP BY request_id)
        SELECT h.request_id, h.block_id,
               sum(bit_count(h.mask_lo) + bit_count(h.mask_hi))::BIGINT AS touch_count
        FROM dsa_block_heat h JOIN p USING (request_id)
        WHERE h.trace_id = $trace AND h.block_id < p.cached{where}
        GROUP BY h.request_id, h.block_id""",  # noqa: S608
        params,
    )
    out: dict[str, list[dict[str, int]]] = {}
    for req, g in df.groupby("request_id", sort=True):
        out[str(req)] = hot_blocks(
            dict(zip(g.block_id.tolist(), g.touch_count.tolist(), strict=True)), top
        )
    return out


def block_popularity(ws: Workspace, trace_id: str) -> pd.DataFrame:
    """Blocks ranked by touches (request, layer, step selections); cumulative share -> CDF."""
    df = _q(
        ws,
        "SELECT request_id, block_id, sum(bit_count(mask_lo) + bit_count(mask_hi))::BIGINT AS"
        " touches FROM dsa_block_heat WHERE trace_id = ? GROUP BY request_id, block_id"
        " ORDER BY touches DESC, request_id, block_id",
        [trace_id],
    )
    total = df["touches"].sum()
    df["block_share"] = (np.arange(len(df)) + 1) / max(len(df), 1)
    df["touch_share"] = df["touches"].cumsum() / max(total, 1)
    return df


def _step_sets(
    ws: Workspace, trace_id: str, request_id: int, layer_lo: int, layer_hi: int
) -> tuple[list[int], list[np.ndarray]]:
    df = heatmap(ws, trace_id, request_id, layer_lo, layer_hi)
    if df.empty:
        return [], []
    steps = df["step_idx"].to_numpy()
    blocks = df["block_id"].to_numpy()
    cuts = np.flatnonzero(np.diff(steps)) + 1
    ids = steps[np.concatenate([[0], cuts])].tolist()
    return ids, np.split(blocks, cuts)


def lru_curve(
    ws: Workspace,
    trace_id: str,
    capacities: Sequence[int],
    layer_lo: int,
    layer_hi: int,
    request_ids: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Hit ratio vs capacity (blocks per request cache) over the chosen requests."""
    reqs = request_ids if request_ids is not None else requests(ws, trace_id)["request_id"].tolist()
    depths = [
        replay.lru_depths(_step_sets(ws, trace_id, int(r), layer_lo, layer_hi)[1]) for r in reqs
    ]
    d = np.concatenate(depths) if depths else np.zeros(0, np.int64)
    return pd.DataFrame(
        {"capacity_blocks": list(capacities), "hit_ratio": replay.hit_ratio_curve(d, capacities)}
    )


def recency_histogram(
    ws: Workspace, trace_id: str, request_id: int, layer_lo: int, layer_hi: int
) -> pd.DataFrame:
    """(recency in decode steps, re-touches): how long ago a re-touched block was last used."""
    ids, sets = _step_sets(ws, trace_id, request_id, layer_lo, layer_hi)
    r = replay.recency(ids, sets)
    values, counts = np.unique(r, return_counts=True)
    return pd.DataFrame({"recency_steps": values, "touches": counts})


def layer_tensor(ws: Workspace, trace_id: str, request_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(step ids, selected[step, block, layer] as bool) for one request, from the heat masks."""
    df = _q(
        ws,
        "SELECT step_idx, block_id, bit_or(mask_lo) AS lo, bit_or(mask_hi) AS hi"
        " FROM dsa_block_heat WHERE trace_id = ? AND request_id = ? GROUP BY step_idx, block_id",
        [trace_id, int(request_id)],
    )
    if df.empty:
        return np.zeros(0, np.int64), np.zeros((0, 0, 0), bool)
    steps, si = np.unique(df["step_idx"].to_numpy(), return_inverse=True)
    _, bi = np.unique(df["block_id"].to_numpy(), return_inverse=True)
    words = np.stack([df["lo"].to_numpy(np.uint64), df["hi"].to_numpy(np.uint64)], axis=1)
    bits = np.unpackbits(words.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    n_layers = int(np.flatnonzero(bits.any(axis=0)).max()) + 1
    out = np.zeros((len(steps), int(bi.max()) + 1, n_layers), bool)
    out[si, bi] = bits[:, :n_layers].astype(bool)
    return steps, out


def jaccard(ws: Workspace, trace_id: str, request_id: int) -> dict[str, pd.DataFrame]:
    """Jaccard overlap of selected blocks: consecutive recorded steps (same layer) and adjacent
    layers (same step), vectorised over the request's step x block x layer tensor."""
    steps, a = layer_tensor(ws, trace_id, request_id)
    empty = pd.DataFrame({"layer_id": [], "step_idx": [], "jaccard": []})
    if not len(steps):
        return {"steps": empty, "layers": empty}
    present = a.any(axis=1)  # [step, layer]: the layer has a record at that step

    def frame(inter, union, ok, step_ids, layer_ids) -> pd.DataFrame:
        t, layer = np.nonzero(ok)
        return pd.DataFrame(
            {"layer_id": layer_ids[layer], "step_idx": step_ids[t],
             "jaccard": inter[t, layer] / union[t, layer]}
        ).sort_values(["step_idx", "layer_id"], ignore_index=True)  # fmt: skip

    inter = (a[1:] & a[:-1]).sum(axis=1)
    union = (a[1:] | a[:-1]).sum(axis=1)
    ok = present[1:] & present[:-1]
    layer_ids = np.arange(a.shape[2])
    by_step = frame(inter, union, ok, steps[1:], layer_ids)
    inter = (a[:, :, 1:] & a[:, :, :-1]).sum(axis=1)
    union = (a[:, :, 1:] | a[:, :, :-1]).sum(axis=1)
    ok = present[:, 1:] & present[:, :-1]
    by_layer = frame(inter, union, ok, steps, layer_ids[1:])
    return {"steps": by_step, "layers": by_layer}


def tier_breakdown(ws: Workspace, trace_id: str) -> pd.DataFrame:
    """kv_fetch per tier: blocks, bytes, read ops and mean latency."""
    parts = [
        f"SELECT '{t}' AS tier, sum({t}_blocks)::BIGINT AS blocks, sum({t}_bytes)::BIGINT AS"  # noqa: S608
        f" bytes_read, sum({t}_ops)::BIGINT AS read_ops, avg({t}_latency_us) AS mean_latency_us"
        f" FROM dsa_steps WHERE trace_id = $t"
        for t in TIERS
    ]
    df = _q(ws, " UNION ALL ".join(parts), {"t": trace_id})
    df["tier"] = df["tier"].map({"hbm": "hbm", "local": "local_pool", "remote": "remote_pool"})
    return df


def step_latency(ws: Workspace, trace_id: str) -> dict[str, float]:
    """Percentiles of decode step wall time (kv_fetch.hbm.latency_us, one value per step)."""
    v = (
        ws.cursor()
        .execute(
            "SELECT any_value(hbm_latency_us) FROM dsa_steps WHERE trace_id = ?"
            " AND hbm_latency_us IS NOT NULL GROUP BY request_id, step_idx",
            [trace_id],
        )
        .fetchnumpy()
    )
    arr = np.sort(next(iter(v.values()))) if v else np.zeros(0)
    if not len(arr):
        return {}
    from studio_backend.dsa.schema import quantile_index

    return {
        "steps": float(len(arr)),
        **{f"p{q}": float(arr[quantile_index(len(arr), q / 100)]) for q in (50, 95, 99)},
        "max": float(arr[-1]),
    }


# ---- Mooncake / Bailian prefix traces -------------------------------------------------------


def prefix_trace_overview(ws: Workspace, trace_id: str) -> dict[str, Any]:
    row = (
        ws.cursor()
        .execute(
            "SELECT count(*), sum(len(hash_ids)), count(DISTINCT chat_id), min(ts), max(ts),"
            " avg(input_length), avg(output_length) FROM dsa_prefix_requests WHERE trace_id = ?",
            [trace_id],
        )
        .fetchall()[0]
    )
    uniq = (
        ws.cursor()
        .execute(
            "SELECT count(DISTINCT h) FROM (SELECT unnest(hash_ids) h FROM dsa_prefix_requests"
            " WHERE trace_id = ?)",
            [trace_id],
        )
        .fetchall()[0][0]
    )
    n, blocks = int(row[0]), int(row[1] or 0)
    return {
        "requests": n, "block_accesses": blocks, "unique_blocks": int(uniq),
        "reused_share": 1 - uniq / blocks if blocks else 0.0, "chats": int(row[2] or 0),
        "duration_s": (row[4] or 0) - (row[3] or 0), "mean_input": row[5], "mean_output": row[6],
    }  # fmt: skip


def prefix_trace_popularity(ws: Workspace, trace_id: str) -> pd.DataFrame:
    df = _q(
        ws,
        "SELECT h AS hash_id, count(*) AS touches FROM (SELECT unnest(hash_ids) h FROM"
        " dsa_prefix_requests WHERE trace_id = ?) GROUP BY h ORDER BY touches DESC, h",
        [trace_id],
    )
    df["block_share"] = (np.arange(len(df)) + 1) / max(len(df), 1)
    df["touch_share"] = df["touches"].cumsum() / max(df["touches"].sum(), 1)
    return df


def prefix_trace_lru(ws: Workspace, trace_id: str, capacities: Sequence[int]) -> pd.DataFrame:
    """One global LRU over hash blocks, requests replayed in timestamp (then line) order."""
    df = _q(
        ws,
        "SELECT hash_ids FROM dsa_prefix_requests WHERE trace_id = ? ORDER BY ts, line_no",
        [trace_id],
    )
    d = replay.lru_depths([np.asarray(x, np.int64) for x in df["hash_ids"]])
    return pd.DataFrame(
        {"capacity_blocks": list(capacities), "hit_ratio": replay.hit_ratio_curve(d, capacities)}
    )
