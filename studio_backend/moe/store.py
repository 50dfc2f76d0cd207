"""Expert load in the workspace: import LoadSets, aggregate in DuckDB SQL, compute metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from studio_backend.errors import InputError, StudioError
from studio_backend.moe import metrics
from studio_backend.moe.records import COLUMNS, LoadSet, validate
from studio_backend.workspace import Workspace


def save(ws: Workspace, load: LoadSet, name: str) -> str:
    """Store one LoadSet under ``name`` (refuses a name already used; all or nothing)."""
    if not name or not name.strip():
        raise InputError(name, "source name must not be empty")
    validate(load)
    cur = ws.cursor()
    if cur.execute("SELECT 1 FROM moe_sources WHERE source = ?", [name]).fetchone():
        raise InputError(name, "a source with this name exists: choose another --name")
    counts = load.counts[COLUMNS]
    with ws.transaction() as tx:
        tx.execute(
            "INSERT INTO moe_sources (source, kind, path, num_experts, num_devices, top_k, meta) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [name, load.kind, load.path, load.num_experts, load.num_devices, load.top_k,
             json.dumps(load.meta, default=str)],
        )  # fmt: skip
        tx.register("moe_new_counts", counts)
        tx.execute("INSERT INTO moe_counts SELECT ? AS source, * FROM moe_new_counts", [name])
        tx.unregister("moe_new_counts")
        slots = counts[["layer", "slot", "device", "expert"]].drop_duplicates(["layer", "slot"])
        tx.register("moe_new_slots", slots)
        tx.execute("INSERT INTO moe_slots SELECT ? AS source, * FROM moe_new_slots", [name])
        tx.unregister("moe_new_slots")
        if load.tokens is not None and len(load.tokens):
            tok = load.tokens[
                ["step", "token", "layer", "k", "expert", "weight", "input_id", "position"]
            ]
            tx.register("moe_new_tokens", tok)
            tx.execute("INSERT INTO moe_tokens SELECT ? AS source, * FROM moe_new_tokens", [name])
            tx.unregister("moe_new_tokens")
    ws.log("experts", f"imported {load.kind} expert load as {name!r} ({len(counts):,} counts)")
    return name


def sources(ws: Workspace) -> pd.DataFrame:
    return ws.cursor().execute("SELECT * FROM moe_sources ORDER BY created_at, source").df()


def source_info(ws: Workspace, name: str) -> dict:
    df = ws.cursor().execute("SELECT * FROM moe_sources WHERE source = ?", [name]).df()
    if df.empty:
        raise StudioError(f"no expert-load source {name!r} in this workspace")
    return df.iloc[0].to_dict()


def _steps_clause(steps: tuple[int, int] | None) -> tuple[str, list]:
    if steps is None:
        return "", []
    return " AND step BETWEEN ? AND ?", [int(steps[0]), int(steps[1])]


@dataclass
class Aggregate:
    """Totals over the chosen steps: expert and device load per layer, and their metrics."""

    layers: list[int]
    expert_load: np.ndarray  # [layer, expert]
    device_load: np.ndarray  # [layer, device]
    table: pd.DataFrame  # layer_metrics rows
    summary: dict[str, float]


def aggregate(ws: Workspace, name: str, steps: tuple[int, int] | None = None) -> Aggregate:
    """One GROUP BY over the counts, then per-layer metrics on the small result (numpy)."""
    info = source_info(ws, name)
    where, params = _steps_clause(steps)
    cur = ws.cursor()
    slots = cur.execute(
        "SELECT layer, slot, device, expert FROM moe_slots WHERE source = ?", [name]
    ).fetchnumpy()
    if len(slots["layer"]) == 0:  # imported before migration 0301: group by the three columns
        rows = cur.execute(
            "SELECT layer, device, expert, sum(count) AS n FROM moe_counts "  # noqa: S608
            "WHERE source = ?" + where + " GROUP BY layer, device, expert",
            [name, *params],
        ).fetchnumpy()
        return aggregate_from_rows(
            rows["layer"], rows["device"], rows["expert"], rows["n"],
            int(info["num_experts"]), int(info["num_devices"]), int(info["top_k"] or 1),
        )  # fmt: skip
    # one packed integer key groups fastest; device and expert come from the slot table
    rows = cur.execute(
        "SELECT layer * 1048576 + slot AS key, sum(count) AS n FROM moe_counts "  # noqa: S608
        "WHERE source = ?" + where + " GROUP BY key",
        [name, *params],
    ).fetchnumpy()
    slot_key = slots["layer"].astype(np.int64) * 1048576 + slots["slot"]
    order = np.argsort(slot_key)
    pos = order[np.searchsorted(slot_key[order], rows["key"])]
    return aggregate_from_rows(
        slots["layer"][pos], slots["device"][pos], slots["expert"][pos], rows["n"],
        int(info["num_experts"]), int(info["num_devices"]), int(info["top_k"] or 1),
    )  # fmt: skip


def aggregate_from_rows(
    layer: np.ndarray, device: np.ndarray, expert: np.ndarray, n: np.ndarray,
    num_experts: int, num_devices: int, top_k: int,
) -> Aggregate:  # fmt: skip
    layers = np.unique(layer)
    li = np.searchsorted(layers, layer)
    el = np.zeros((len(layers), num_experts))
    dl = np.zeros((len(layers), num_devices))
    np.add.at(el, (li, expert), n)
    np.add.at(dl, (li, device), n)
    table = metrics.layer_metrics(el, dl, top_k, layers=layers.tolist())
    return Aggregate(layers.tolist(), el, dl, table, metrics.model_summary(dl))


def evolution(ws: Workspace, name: str) -> pd.DataFrame:
    """Per step: tokens, balancedness (mean/max per layer, averaged) and max/mean, in SQL."""
    return (
        ws.cursor()
        .execute(
            """
        WITH d AS (
            SELECT step, layer, device, sum(count) AS n FROM moe_counts
            WHERE source = ? GROUP BY step, layer, device
        ), l AS (
            SELECT step, layer, sum(n) AS tokens, avg(n) AS mean_n, max(n) AS max_n
            FROM d GROUP BY step, layer
        )
        SELECT step, sum(tokens) AS tokens,
               avg(CASE WHEN max_n > 0 THEN mean_n / max_n END) AS balancedness,
               avg(CASE WHEN mean_n > 0 THEN max_n / mean_n END) AS peak_to_avg
        FROM l GROUP BY step ORDER BY step
        """,
            [name],
        )
        .df()
    )


def hot_experts(ws: Workspace, name: str, limit: int = 20) -> pd.DataFrame:
    """The most loaded (layer, expert) pairs with their share of the layer's load."""
    return (
        ws.cursor()
        .execute(
            """
        WITH e AS (SELECT layer, expert, sum(count) AS tokens FROM moe_counts
                   WHERE source = ? GROUP BY layer, expert)
        SELECT layer, expert, tokens,
               tokens / sum(tokens) OVER (PARTITION BY layer) AS share_of_layer,
               tokens / avg(tokens) OVER (PARTITION BY layer) AS times_mean
        FROM e ORDER BY tokens DESC, layer, expert LIMIT ?
        """,
            [name, int(limit)],
        )
        .df()
    )


def counts_by_step(ws: Workspace, name: str) -> pd.DataFrame:
    """Per (step, layer, expert) counts summed over ranks and replicas (the CLI's output)."""
    return (
        ws.cursor()
        .execute(
            "SELECT step, layer, expert, sum(count) AS count FROM moe_counts WHERE source = ? "
            "GROUP BY step, layer, expert ORDER BY step, layer, expert",
            [name],
        )
        .df()
    )


def has_tokens(ws: Workspace, name: str) -> bool:
    """Whether the source holds per-token routing (dumps, SGLang per_token)."""
    row = ws.cursor().execute("SELECT 1 FROM moe_tokens WHERE source = ? LIMIT 1", [name])
    return row.fetchone() is not None


def tokens_for_expert(ws: Workspace, name: str, layer: int, expert: int) -> pd.DataFrame:
    """Tokens routed to one expert of one layer (sources with per-token routing only)."""
    return (
        ws.cursor()
        .execute(
            "SELECT step, token, k, weight, input_id, position FROM moe_tokens "
            "WHERE source = ? AND layer = ? AND expert = ? ORDER BY step, token",
            [name, int(layer), int(expert)],
        )
        .df()
    )


def delete(ws: Workspace, name: str) -> None:
    with ws.transaction() as tx:
        for table in ("moe_tokens", "moe_slots", "moe_counts", "moe_sources"):
            tx.execute(f"DELETE FROM {table} WHERE source = ?", [name])  # noqa: S608
