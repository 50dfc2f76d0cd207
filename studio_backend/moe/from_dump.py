"""Expert load of an ingested dump: router logits -> top-k routing -> counts per step/layer.

Router logits are output 0 of the router module wherever the engine's layout puts it:
``model.layers.N.mlp.gate`` (older vLLM's ReplicatedLinear returns ``(logits, bias)``,
transformers' router ``(logits, weights, ids)``) or ``model.layers.N.mlp.experts.gate`` (vLLM
0.32's GateLinear, one object registered under both names and dumped under this one). They are
identical on every rank, so the stitched tensor (or rank 0's) is used. Dump tensors come only
through ``studio_backend.dumps.query``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from studio_backend.dumps import query
from studio_backend.errors import StudioError
from studio_backend.moe.placement import contiguous
from studio_backend.moe.records import ALL_RANKS, LoadSet, slot_counts
from studio_backend.moe.routing import route
from studio_backend.workspace import Workspace

GATE = r"^model\.layers\.\d+\.mlp\.(experts\.)?gate$"
ROUTER_NAMES = "model.layers.N.mlp.gate or model.layers.N.mlp.experts.gate outputs"


def _one_router_per_layer(rows: pd.DataFrame) -> pd.DataFrame:
    """Both names of one router (an alias, equal data): keep one row per step, layer and idx."""
    if rows.empty:
        return rows
    layer = rows["module"].str.extract(r"layers\.(\d+)\.", expand=False).astype(int)
    pref = rows["module"].str.endswith(".mlp.gate").map({True: 0, False: 1})
    rows = rows.assign(_layer=layer, _pref=pref).sort_values(["step", "_layer", "idx", "_pref"])
    return rows.drop_duplicates(["step", "_layer", "idx"]).drop(columns=["_layer", "_pref"])


def router_module(ws: Workspace, run_id: str, layer: int) -> str:
    """The dumped router module of a layer (``...mlp.gate`` or ``...mlp.experts.gate``)."""
    rows = query.find_tensors(ws, run_id, module_regex=GATE, io="output", stitched=False)
    rows = rows[rows["layer"] == layer]
    if rows.empty:
        return f"model.layers.{layer}.mlp.gate"
    return str(_one_router_per_layer(rows)["module"].iloc[0])


def _is_moe(cfg: dict, layer: int) -> bool:
    """Seed 001 rule on the raw config dict (both expert-count spellings)."""
    experts = cfg.get("num_experts", cfg.get("num_local_experts", 0)) or 0
    step = cfg.get("decoder_sparse_step", 1) or 1
    return (
        layer not in (cfg.get("mlp_only_layers") or []) and experts > 0 and (layer + 1) % step == 0
    )


def load_from_dump(
    ws: Workspace,
    run_id: str,
    *,
    top_k: int | None = None,
    norm_topk_prob: bool | None = None,
    num_devices: int | None = None,
) -> LoadSet:
    info = query.run_info(ws, run_id)
    raw = info.get("model_config")
    cfg = (
        json.loads(raw) if isinstance(raw, str) and raw else (raw if isinstance(raw, dict) else {})
    )
    top_k = int(top_k or cfg.get("num_experts_per_tok") or 0)
    if top_k < 1:
        raise StudioError(
            f"dump {run_id} has no num_experts_per_tok in its config: give the top-k explicitly"
        )
    norm = bool(cfg.get("norm_topk_prob", False)) if norm_topk_prob is None else norm_topk_prob
    rows = query.find_tensors(ws, run_id, module_regex=GATE, io="output")
    if rows.empty:  # not stitched: take the lowest rank's copy (replicated on every rank)
        rows = query.find_tensors(ws, run_id, module_regex=GATE, io="output", stitched=False)
        rows = rows.sort_values("rank").drop_duplicates(["step", "module", "idx"])
    rows = _one_router_per_layer(rows[rows["part"].isna()])
    dumped_ids = rows[rows["idx"] == 2]  # transformers layout: (logits, weights, ids)
    rows = rows[rows["idx"] == 0]
    if rows.empty:
        raise StudioError(f"dump {run_id} holds no router logits ({ROUTER_NAMES})")
    layers = sorted({int(re.search(r"layers\.(\d+)\.", m).group(1)) for m in rows["module"]})
    not_moe = [layer for layer in layers if cfg and not _is_moe(cfg, layer)]
    steps = sorted(rows["step"].unique().tolist())
    n_experts = None
    arr = None
    tokens = []
    verified = 0
    for r in rows.itertuples():
        logits = query.load_tensor(ws, int(r.tensor_id))
        n_experts = n_experts or int(logits.shape[-1])
        if arr is None:
            arr = np.zeros((len(steps), len(layers), n_experts), dtype=np.int64)
        layer = layers.index(int(re.search(r"layers\.(\d+)\.", r.module).group(1)))
        rt = route(logits, top_k, norm)
        ids_row = dumped_ids[(dumped_ids.step == r.step) & (dumped_ids.module == r.module)]
        if not ids_row.empty:  # the engine's own choice must be ours (as sets per token)
            theirs = query.load_tensor(ws, int(ids_row.tensor_id.iloc[0])).numpy()
            if (
                theirs.shape != rt.ids.shape
                or not (np.sort(theirs, -1) == np.sort(rt.ids, -1)).all()
            ):
                raise StudioError(
                    f"{r.module} step {r.step}: dumped top-k ids differ from softmax top-{top_k} "
                    "of the dumped logits (check num_experts_per_tok)"
                )
            verified += 1
        arr[steps.index(int(r.step)), layer] += rt.counts(n_experts)
        t, k = rt.ids.shape
        tokens.append(
            pd.DataFrame(
                {
                    "step": int(r.step),
                    "token": np.repeat(np.arange(t), k),
                    "layer": layers[layer],
                    "k": np.tile(np.arange(k), t),
                    "expert": rt.ids.reshape(-1),
                    "weight": rt.weights.reshape(-1).astype(np.float64),
                    "input_id": -1,
                    "position": -1,
                }
            )
        )
    if not num_devices:  # EP over the TP ranks, as vLLM does; count the ranks that dumped
        per_rank = query.find_tensors(ws, run_id, module_regex=GATE, io="output", stitched=False)
        recorded = int(per_rank["rank"].nunique()) if not per_rank.empty else 1
        tp = info.get("tp_size")
        num_devices = max(recorded, int(tp) if isinstance(tp, int | np.integer) else 1)
    ndev = int(num_devices)
    placement = contiguous(len(layers), n_experts, ndev)
    df = slot_counts(arr, placement, rank=ALL_RANKS, steps=np.array(steps), layers=np.array(layers))
    return LoadSet(
        "dump",
        str(info.get("root")),
        df,
        n_experts,
        ndev,
        top_k=top_k,
        tokens=pd.concat(tokens, ignore_index=True),
        meta={
            "run_id": run_id,
            "norm_topk_prob": norm,
            "layers_not_moe_by_config": not_moe,
            "checked_against_dumped_ids": verified,
            "router_modules": sorted(
                set(rows["module"].str.replace(r"^.*layers\.\d+\.", "", regex=True))
            ),
        },
    )
