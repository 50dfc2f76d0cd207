"""Small recorder files written in each engine's documented structure (seeded, synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

RNG = np.random.default_rng(7)


def sglang_stat(path: Path, steps: int = 3, layers: int = 4, experts: int = 8) -> np.ndarray:
    """Stat mode: logical_count [buffer steps, layers, experts]; layer 0 dense (zeros), one unused
    buffer row at the end (zeros) as SGLang's circular buffer leaves them."""
    lc = RNG.integers(0, 50, size=(steps + 1, layers, experts)).astype(np.int32)
    lc[:, 0] = 0
    lc[-1] = 0
    torch.save(
        {
            "rank": 0,
            "logical_count": torch.from_numpy(lc),
            "average_utilization_rate_over_window": None,
        },
        path,
    )
    return lc


def sglang_per_token(path: Path, rank: int, p2l: np.ndarray, tokens: int = 5, topk: int = 2):
    """per_token mode: one record per forward pass with topk_ids_of_layer (physical ids, -1 pad)."""
    layers, phys = p2l.shape
    records = []
    all_ids = []
    for fp in range(2):
        ids = np.stack([RNG.permutation(phys)[:topk] for _ in range(layers * tokens)]).reshape(
            layers, tokens, topk
        )
        ids[:, -1, 1] = -1  # a padded choice
        gpc = np.zeros((layers, phys), dtype=np.int32)
        for layer in range(layers):
            v = ids[layer].reshape(-1)
            np.add.at(gpc[layer], v[v >= 0], 1)
        records.append(
            {
                "forward_pass_id": fp,
                "rank": rank,
                "gatherer_key": "primary",
                "input_ids": list(range(100, 100 + tokens)),
                "positions": list(range(tokens)),
                "extend_seq_lens": [tokens],
                "forward_mode": 1,
                "topk_ids_of_layer": torch.from_numpy(ids.astype(np.int32)),
                "misc_objects": [],
                "global_physical_count": torch.from_numpy(gpc),
            }
        )
        all_ids.append(ids)
    torch.save({"records": records, "last_physical_to_logical_map": torch.from_numpy(p2l)}, path)
    return records, all_ids


def mindie_folder(root: Path, ranks: int = 2, layers: int = 3, experts: int = 8, iters: int = 4):
    """decode_<rank>.csv with cumulative rows (iteration x layer) and model_gen_config.json."""
    d = root / "decode"
    d.mkdir(parents=True)
    per_iter = RNG.integers(0, 30, size=(iters, layers, experts))
    cum = per_iter.cumsum(axis=0)
    local = experts // ranks
    for r in range(ranks):
        block = cum[:, :, r * local : (r + 1) * local].reshape(iters * layers, local)
        (d / f"decode_{r}.csv").write_text(
            "\n".join(",".join(map(str, row)) for row in block) + "\n"
        )
    cfg = {
        "num_moe_layers": layers,
        "collection_Interval": 8,
        "num_of_experts": experts,
        "num_of_selected_experts": [2],
    }
    (d / "model_gen_config.json").write_text(json.dumps(cfg, indent=4))
    return per_iter


def expert_map(path: Path, layers: list[list[list[int]]]) -> None:
    rec = {
        "moe_layer_count": len(layers),
        "layer_list": [
            {
                "layer_id": i,
                "device_count": len(devs),
                "device_list": [{"device_id": d, "device_expert": e} for d, e in enumerate(devs)],
            }
            for i, devs in enumerate(layers)
        ],
    }
    path.write_text(json.dumps(rec, indent=4))
