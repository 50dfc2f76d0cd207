"""MindIE expert hot-spot CSVs, as msit's expert_load_balancing reads them.

A folder per phase (``prefill/``, ``decode/``) with ``model_gen_config.json`` (``num_moe_layers,
num_of_experts, num_of_selected_experts: [k], collection_Interval``, optional
``eplb_expert_map_file``) and one ``<phase>_<rank>.csv`` per rank: no header, row ``i * L + l`` =
iteration i, MoE layer l; columns = the rank's local expert slots; counts are CUMULATIVE, so
adjacent iterations are diffed. Ranks concatenated give the physical slots; the expert map (if
any) maps them to logical experts. A trailing incomplete iteration is dropped (as msit does).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from studio_backend.errors import InputError
from studio_backend.moe.formats import expert_map
from studio_backend.moe.placement import Placement
from studio_backend.moe.records import LoadSet, slot_counts

_CSV = re.compile(r"^(prefill|decode)_(\d+)\.csv$")


def _read_config(folder: Path) -> tuple[dict, Path]:
    for cand in (folder / "model_gen_config.json", folder.parent / "model_gen_config.json"):
        if cand.is_file():
            try:
                cfg = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InputError(cand, f"not readable JSON ({exc})") from exc
            for key in ("num_moe_layers", "num_of_experts"):
                if not isinstance(cfg.get(key), int) or cfg[key] < 1:
                    raise InputError(cand, f"{key} must be a positive integer")
            sel = cfg.get("num_of_selected_experts")
            if not (isinstance(sel, list) and sel and isinstance(sel[0], int)):
                raise InputError(cand, "num_of_selected_experts must be a list like [8]")
            return cfg, cand
    raise InputError(folder, "no model_gen_config.json here or in the parent folder")


def _read_csv(path: Path) -> np.ndarray:
    rows: list[list[int]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                try:
                    rows.append([int(float(c)) for c in row if c.strip() != ""])
                except ValueError as exc:
                    raise InputError(path, f"row {n}: not a number ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"unreadable CSV ({exc})") from exc
    if not rows:
        raise InputError(path, "no rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise InputError(path, f"rows have different numbers of columns: {sorted(widths)}")
    return np.array(rows, dtype=np.int64)


def phases(folder: str | Path) -> dict[str, Path]:
    """The phase folders under ``folder`` (itself if it holds CSVs directly)."""
    root = Path(folder)
    found = {}
    for sub in ("prefill", "decode"):
        if (root / sub).is_dir() and any(_CSV.match(x.name) for x in (root / sub).iterdir()):
            found[sub] = root / sub
    if not found:
        names = {m.group(1) for x in root.iterdir() if (m := _CSV.match(x.name))}
        found = dict.fromkeys(sorted(names), root)
    if not found:
        raise InputError(root, "no prefill_<rank>.csv or decode_<rank>.csv files")
    return found


def read(folder: str | Path, phase: str) -> LoadSet:
    root = Path(folder)
    cfg, cfg_path = _read_config(root)
    n_layers, n_experts = cfg["num_moe_layers"], cfg["num_of_experts"]
    files = sorted(
        (int(m.group(2)), x)
        for x in root.iterdir()
        if (m := _CSV.match(x.name)) and m.group(1) == phase
    )
    if not files:
        raise InputError(root, f"no {phase}_<rank>.csv files")
    per_rank = []
    for _rank, f in files:
        a = _read_csv(f)
        iters = a.shape[0] // n_layers
        if iters < 1:
            raise InputError(f, f"{a.shape[0]} rows < num_moe_layers={n_layers}")
        per_rank.append(a[: iters * n_layers])
    iters = min(a.shape[0] for a in per_rank) // n_layers
    cum = np.concatenate([a[: iters * n_layers] for a in per_rank], axis=1)
    cum = cum.reshape(iters, n_layers, -1)
    diff = cum.copy()
    diff[1:] -= cum[:-1]
    if (diff < 0).any():
        i = int(np.argwhere(diff < 0)[0][0])
        raise InputError(root, f"{phase} counts decrease at iteration {i}: rows are not cumulative")
    widths = [a.shape[1] for a in per_rank]
    n_slots = sum(widths)
    device = np.repeat(np.arange(len(files)), widths)
    map_file = cfg.get("eplb_expert_map_file")
    if map_file:
        mp = Path(map_file)
        mp = mp if mp.is_absolute() else cfg_path.parent / mp
        pl = expert_map.read(mp)
        if pl.slot_expert.shape != (n_layers, n_slots):
            raise InputError(
                mp, f"map is {list(pl.slot_expert.shape)}, CSVs give {[n_layers, n_slots]}"
            )
        placement = Placement(pl.slot_expert, np.tile(device, (n_layers, 1)), len(files))
    else:
        if n_slots != n_experts:
            raise InputError(
                root,
                f"{n_slots} CSV columns != num_of_experts={n_experts} and no eplb_expert_map_file",
            )
        placement = Placement(
            np.tile(np.arange(n_slots), (n_layers, 1)), np.tile(device, (n_layers, 1)), len(files)
        )
    ranks = np.array([r for r, _ in files])
    df = slot_counts(diff, placement, rank=-1)
    df["rank"] = ranks[df["device"].to_numpy()].astype(np.int32)  # the CSV's rank holds the slot
    return LoadSet(
        f"mindie-{phase}",
        str(root),
        df,
        n_experts,
        len(files),
        top_k=cfg["num_of_selected_experts"][0],
        meta={"collection_interval": cfg.get("collection_Interval")},
    )
