"""Activations from the workspace, only through the dumps query API (``studio_backend.dumps.query``).

Selection helpers for the page and the ``render`` command: tensors of a run/step/io matching a
layer-pattern regex, fused parts (stored by the stitcher, or split here from config.json head
counts), per-layer statistics and the token text of a step when a tokenizer is known.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from studio_backend.analysis import parts, views
from studio_backend.dumps.axis import Axis, to_matrix
from studio_backend.errors import InputError, StudioError
from studio_backend.workspace import Workspace

_LAYER = re.compile(r"(?:^|\.)layers\.\d+(?:\.|$)")
DECODER_LAYER = "decoder layer"  # the kind of ``model.layers.N`` itself


def module_kind(module: str) -> str:
    """The module's name without its layer: ``model.layers.3.mlp.down_proj`` -> ``mlp.down_proj``;
    ``model.layers.3`` itself -> ``decoder layer`` (one kind across layers, not one per layer)."""
    m = _LAYER.search(module)
    return (module[m.end() :] or DECODER_LAYER) if m else module


def check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise InputError("layer pattern", f"{pattern!r} is not a valid regex ({exc})") from None
    return pattern


def run_config(ws: Workspace, run_id: str) -> dict:
    """The run's model config (config.json found with the dump), or {}."""
    sql = "SELECT model_config FROM dump_runs WHERE run_id = ?"  # one row, not list_runs' counts
    row = ws.cursor().execute(sql, [run_id]).fetchone()
    if row is None:
        raise StudioError(f"no dump run {run_id!r} in this workspace")
    raw = row[0]
    if raw is None:
        return {}
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def tensors(
    ws: Workspace,
    run_id: str,
    *,
    step: int | None = None,
    pattern: str | None = None,
    io: str | None = None,
) -> pd.DataFrame:
    """Stitched (true, unsharded) tensors; pattern is searched anywhere in the module name."""
    from studio_backend.dumps.query import find_tensors

    regex = check_regex(pattern) if pattern else None
    return find_tensors(ws, run_id, step=step, module_regex=regex, io=io, stitched=True)


@dataclass(frozen=True)
class Selected:
    """One activation picked on the page (``part`` None = the whole tensor)."""

    run_id: str
    step: int
    module: str
    io: str
    idx: int
    part: str | None

    @property
    def label(self) -> str:
        p = f"[{self.part}]" if self.part else ""
        return f"{self.module}{p} {self.io}_{self.idx} step {self.step}"


def available_parts(rows: pd.DataFrame, module: str, io: str, idx: int, config: dict) -> list[str]:
    """Parts offered for a module: stored part rows first, else a config-based split."""
    mine = rows[(rows["module"] == module) & (rows["io"] == io) & (rows["idx"] == idx)]
    stored = [p for p in mine["part"].tolist() if isinstance(p, str)]
    if stored:
        return stored
    if parts.parts_of(module, io) and (config or module.endswith("gate_up_proj")):
        return list(parts.parts_of(module, io))
    return []


def load(ws: Workspace, sel: Selected, config: dict | None = None) -> torch.Tensor:
    """The selected activation; a part not stored is split from the whole tensor."""
    from studio_backend.dumps.query import load_tensor

    rows = tensors(ws, sel.run_id, step=sel.step, pattern=f"^{re.escape(sel.module)}$", io=sel.io)
    rows = rows[rows["idx"] == sel.idx]
    if rows.empty:
        raise StudioError(f"{sel.label}: not in run {sel.run_id}")
    if sel.part:
        stored = rows[rows["part"] == sel.part]
        if not stored.empty:
            return load_tensor(ws, int(stored.iloc[0]["tensor_id"]))
    whole = rows[rows["part"].isna()]
    if whole.empty:
        raise StudioError(f"{sel.label}: only parts are stored, pick one")
    t = load_tensor(ws, int(whole.iloc[0]["tensor_id"]))
    if sel.part:
        cfg = config if config is not None else run_config(ws, sel.run_id)
        t = parts.split(sel.module, t, cfg, sel.part)
    return t


def _row_of(ws: Workspace, sel: Selected) -> int:
    """The tensor id the selection reads (its stored part, else the whole tensor)."""
    return _target(ws, sel)[0]


def _target(ws: Workspace, sel: Selected) -> tuple[int, bool]:
    """The tensor id the selection reads, and whether its part is split off it here."""
    rows = tensors(ws, sel.run_id, step=sel.step, pattern=f"^{re.escape(sel.module)}$", io=sel.io)
    return target_in(rows, sel)


def target_in(rows: pd.DataFrame, sel: Selected) -> tuple[int, bool]:
    """``_target`` looked up in ``tensors()`` rows already read (any superset of the module's)."""
    rows = rows[(rows["step"] == sel.step) & (rows["module"] == sel.module)
                & (rows["io"] == sel.io) & (rows["idx"] == sel.idx)]  # fmt: skip
    if sel.part is not None and not rows[rows["part"] == sel.part].empty:
        return int(rows[rows["part"] == sel.part].iloc[0]["tensor_id"]), False
    whole = rows[rows["part"].isna()]
    if whole.empty:
        raise StudioError(f"{sel.label}: not in run {sel.run_id}")
    return int(whole.iloc[0]["tensor_id"]), sel.part is not None


def recipe(
    ws: Workspace, sel: Selected, config: dict | None = None, token_dims: int | None = None,
    *, as_stored: bool = False,
) -> tuple[int, views.Recipe]:  # fmt: skip
    """The tensor id a selection reads and how its view matrix is made from it (its part split
    off, ``token_dims`` or the stored axis; ``as_stored``: no matrix, the tensor's own shape)."""
    return _recipe(ws, sel, _target(ws, sel), config, token_dims, as_stored)


def recipes_in(
    ws: Workspace, sels: list[Selected], rows: pd.DataFrame, config: dict
) -> list[tuple[int, views.Recipe]]:
    """``recipe`` of each selection, looked up in ``tensors()`` rows already read (one query
    for a whole ``studio render`` batch instead of three per tensor)."""
    return [_recipe(ws, s, target_in(rows, s), config, None, False) for s in sels]


def _recipe(
    ws: Workspace, sel: Selected, target: tuple[int, bool], config: dict | None,
    token_dims: int | None, as_stored: bool,
) -> tuple[int, views.Recipe]:  # fmt: skip
    from studio_backend.dumps import axis_store

    tid, split = target
    k = (
        None
        if as_stored
        else (token_dims if token_dims is not None else axis_store.get(ws, tid).token_dims)
    )
    if not split:
        return tid, views.Recipe(k)
    cfg = config if config is not None else run_config(ws, sel.run_id)
    return tid, views.Recipe(k, sel.module, sel.part, json.dumps(cfg, sort_keys=True))


def is_remote(ws: Workspace, sel: Selected) -> bool:
    """True when the selection's tensor lies on another Ray node (views then ask that node)."""
    return any(views.remote_places(ws, [_target(ws, sel)[0]]))


def view(ws: Workspace, op: str, sels: list[Selected], recipes: list[views.Recipe] | None = None,
         **kw) -> object:  # fmt: skip
    """``views.OPS[op]`` over the selections' matrices (their stored axes unless ``recipes``),
    computed where the tensors are: only the result travels from a remote node."""
    ids = [_target(ws, s)[0] for s in sels]
    recs = recipes if recipes is not None else [recipe(ws, s)[1] for s in sels]
    return views.run(ws, op, ids, recs, **kw)


def axis_of(ws: Workspace, sel: Selected) -> Axis:
    """The token axis of the selection (decided at ingest or overridden; a part split here
    from a 2-D fused output is 2-D too)."""
    from studio_backend.dumps import axis_store

    a = axis_store.get(ws, _row_of(ws, sel))
    return a


def matrix(
    ws: Workspace, sel: Selected, config: dict | None = None, token_dims: int | None = None
) -> torch.Tensor:
    """The selection as ``[tokens, channels]`` on its token axis (``token_dims`` overrides)."""
    t = load(ws, sel, config)
    k = token_dims if token_dims is not None else axis_of(ws, sel).token_dims
    return to_matrix(t, min(k, t.dim()))


def stored_matrix(ws: Workspace, tensor_id: int) -> torch.Tensor:
    """One stored tensor as ``[tokens, channels]`` on its token axis."""
    from studio_backend.dumps import axis_store
    from studio_backend.dumps.query import load_tensor

    return to_matrix(load_tensor(ws, tensor_id), axis_store.get(ws, tensor_id).token_dims)


def _on_stored(ws: Workspace, op: str, tensor_id: int) -> object:
    """``op`` over one stored tensor as ``[tokens, channels]`` in its stored dtype, computed
    where it is (``stored_matrix``'s view, without moving a remote tensor)."""
    from studio_backend.dumps import axis_store

    k = axis_store.get(ws, tensor_id).token_dims
    return views.run(ws, op, [tensor_id], [views.Recipe(k, plain=True)])


def layer_stats(
    ws: Workspace, run_id: str, *, step: int, io: str, pattern: str | None = None
) -> pd.DataFrame:
    """One row per whole (not part) floating tensor: layer, kind, module, absmax, kurtosis, counts."""
    rows = tensors(ws, run_id, step=step, pattern=pattern, io=io)
    out = []
    for r in rows[rows["part"].isna()].itertuples():
        s = _on_stored(ws, "float_summary", int(r.tensor_id))  # where the tensor is
        if s is None:
            continue
        out.append(
            {
                "layer": None if pd.isna(r.layer) else int(r.layer),
                "kind": module_kind(r.module) + ("" if r.idx == 0 else f" #{r.idx}"),
                "module": r.module,
                "idx": int(r.idx),
                "tensor_id": int(r.tensor_id),
                **s.as_dict(),
            }
        )
    return pd.DataFrame(out)


def persistence(ws: Workspace, stats: pd.DataFrame, kind: str, *, k: int = 16) -> pd.DataFrame:
    """Layer x channel absmax for the channels that are top-K in any layer of one module kind."""
    sub = stats[(stats["kind"] == kind) & stats["layer"].notna()].sort_values("layer")
    per_layer: dict[int, np.ndarray] = {}
    for r in sub.itertuples():
        per_layer[int(r.layer)] = _on_stored(ws, "channel_absmax", int(r.tensor_id))
    if not per_layer:
        return pd.DataFrame()
    widths = {a.size for a in per_layer.values()}
    if len(widths) != 1:
        raise StudioError(f"{kind}: channel counts differ across layers ({sorted(widths)})")
    mat = np.stack(list(per_layer.values()))
    # Channels ranked by how often they are top-K, then by their largest absmax.
    hits = np.zeros(mat.shape[1])
    for row in mat:
        hits[np.argsort(-row, kind="stable")[:k]] += 1
    order = np.lexsort((-mat.max(axis=0), -hits))[:k]
    return pd.DataFrame(mat[:, order], index=list(per_layer), columns=order.tolist())


def token_texts(
    ws: Workspace, run_id: str, step: int, tokenizer_dir: str | None
) -> list[str] | None:
    """Text of each token of a step: ids from ``embed_tokens`` input, decoded by the tokenizer.

    Returns None when the dump has no embedding input or no tokenizer is known.
    """
    from studio_backend.dumps.query import load_tensor

    if not tokenizer_dir:
        return None
    path = Path(tokenizer_dir).expanduser().resolve()
    if not (path / "tokenizer.json").is_file():
        raise InputError(path, "has no tokenizer.json")
    rows = tensors(ws, run_id, step=step, pattern=r"embed_tokens$", io="input")
    rows = rows[(rows["idx"] == 0) & rows["part"].isna()]
    if rows.empty:
        return None
    ids = load_tensor(ws, int(rows.iloc[0]["tensor_id"])).reshape(-1).tolist()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    return [tok.decode([int(i)]) for i in ids]


def not_stitched(
    ws: Workspace, run_id: str, *, step: int, pattern: str | None = None, io: str | None = None
) -> pd.DataFrame:
    """Tensors of a step whose stitch failed or is unknown: they have no stitched tensor, so the
    page must say they are missing rather than silently leave them out."""
    from studio_backend.dumps.query import stitch_report

    rep = stitch_report(ws, run_id, step)
    rep = rep[rep["verdict"].isin(["failed", "unknown"])]
    if io is not None:
        rep = rep[rep["io"] == io]
    if pattern:
        rep = rep[rep["module"].str.contains(check_regex(pattern), regex=True)]
    return rep.reset_index(drop=True)
