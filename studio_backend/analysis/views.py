"""What a view computes from stored tensors, as named operations (a table, ``OPS``).

An operation takes the ``[tokens, channels]`` matrix (``Recipe.matrix``) of one tensor, or of
two for a comparison, and returns something screen-sized: a pooled grid, statistics, a table.
``run`` computes it here for a tensor on this machine's disk, or asks the Ray node that holds
the tensor (``studio_backend/dumps/cluster/where.py``), so only the result travels, never the tensor
(docs/DUMPS.md, "What travels when you view a remote tensor"). Results cross the network in
``compact`` form (exact: smaller integer dtypes, bf16-exact floats as their high 16 bits).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from studio_backend.analysis import compare, lod, outliers, parts
from studio_backend.analysis.grid import Grid
from studio_backend.dumps.axis import to_matrix
from studio_backend.workspace import Workspace


@dataclass(frozen=True)
class Recipe:
    """How a view's matrix is made from the stored tensor: a fused part split off the whole
    tensor first (``part``; ``config`` is the run's config.json as JSON text, hashable), then
    ``token_dims`` leading dims as tokens (None: the tensor as stored, for ``shape``);
    ``plain``: dtype as stored (integers stay integers), else as the Activations page views it."""

    token_dims: int | None
    module: str = ""
    part: str | None = None
    config: str = "{}"
    plain: bool = False

    def tensor(self, t: torch.Tensor) -> torch.Tensor:
        if self.part is not None:
            t = parts.split(self.module, t, json.loads(self.config), self.part)
        return t

    def matrix(self, t: torch.Tensor) -> torch.Tensor:
        """As the Activations page views it: bf16/fp16 kept (pooling is exact in them)."""
        t = self.tensor(t)
        if self.token_dims is None:
            return t
        m = to_matrix(t, min(self.token_dims, t.dim()))
        return m if self.plain else lod.as_matrix(m, keep_float=True)


def _rows(t0: int, t1: int | None, m: torch.Tensor) -> torch.Tensor:
    return m[t0 : m.shape[0] if t1 is None else t1]


def _top_k(m: torch.Tensor, *, k: int, t0: int = 0, t1: int | None = None) -> Any:
    top = outliers.top_k(_rows(t0, t1, m), k)
    top["token"] += t0
    return top


def _channel_table(m: torch.Tensor, *, k: int, t0: int = 0, t1: int | None = None) -> Any:
    chans = outliers.channel_table(_rows(t0, t1, m), k)
    chans["token"] += t0
    return chans


def _grid(m: torch.Tensor, *, channels: str = "", **kw: Any) -> Grid:
    ch = lod.parse_channels(channels, m.shape[1]) if channels.strip() else None
    return lod.build_grid(m, channels=ch, **kw)


def _ab(a: torch.Tensor, b: torch.Tensor, *, k: int, max_tokens: int, max_channels: int,
        absolute: bool = False, log: bool = False) -> tuple:  # fmt: skip
    """The Activations page's A/B tab: metrics of B against A, grids of A, B and B - A."""
    opts = dict(max_tokens=max_tokens, max_channels=max_channels, absolute=absolute, log=log)
    return (
        compare.compare(b, a, k=k),
        lod.build_grid(a, **opts),
        lod.build_grid(b, **opts),
        lod.build_grid(b.float() - a.float(), max_tokens=max_tokens, max_channels=max_channels),
    )


def _pair_grids(a: torch.Tensor, b: torch.Tensor) -> tuple[Grid, Grid, Grid]:
    """The Compare page's 3D view of one pair: A, B and A - B (float64 difference)."""
    x, y = a.float(), b.float()
    d = x.to(torch.float64) - y.to(torch.float64)
    return (lod.build_grid(x, max_tokens=200, max_channels=400),
            lod.build_grid(y, max_tokens=200, max_channels=400),
            lod.build_grid(d.float(), max_tokens=100, max_channels=200))  # fmt: skip


# name -> (number of tensors, function of their matrices and keywords)
OPS: dict[str, tuple[int, Callable[..., Any]]] = {
    "shape": (1, lambda t: (tuple(t.shape), str(t.dtype).removeprefix("torch."))),
    "grid": (1, _grid),
    "summary": (1, lambda m, t0=0, t1=None: outliers.summarize(_rows(t0, t1, m))),
    "top_k": (1, _top_k),
    "channel_table": (1, _channel_table),
    "channel_absmax": (1, lambda m: outliers.channel_absmax(m)),
    # the across-layers table: floating tensors only (a plain recipe keeps the stored dtype)
    "float_summary": (
        1,
        lambda m: outliers.summarize(m) if m.is_floating_point() and m.numel() else None,
    ),
    "ab": (2, _ab),
    "pair_grids": (2, _pair_grids),
}


def apply(op: str, tensors: list[torch.Tensor], recipes: list[Recipe], kw: dict[str, Any]) -> Any:
    """``op`` over the stored tensors, each made into its matrix by its recipe (pure)."""
    n, fn = OPS[op]
    if len(tensors) != n or len(recipes) != n:
        raise ValueError(f"view {op!r} takes {n} tensor(s)")
    return fn(*(r.matrix(t) for t, r in zip(tensors, recipes, strict=True)), **kw)


def run(ws: Workspace, op: str, ids: list[int], recipes: list[Recipe], **kw: Any) -> Any:
    """``op`` over stored tensors (by id), computed where they are: here, or on the Ray node
    holding the (first remote) one, the others' tensors sent there node to node."""
    from studio_backend.dumps.query import load_tensor

    places = remote_places(ws, ids)
    if not any(places):
        return apply(op, [load_tensor(ws, i) for i in ids], recipes, kw)
    from studio_backend.dumps.cluster import where

    return where.compute(ws, op, ids, places, recipes, kw)


def remote_places(ws: Workspace, ids: list[int]) -> list[Any]:
    """Where each tensor lives when it is on another Ray node, else None (no Ray import for a
    workspace without cluster runs)."""
    (n,) = ws.cursor().execute(
        "SELECT count(*) FROM dump_tensors JOIN dump_cluster_runs USING (run_id) "
        "WHERE tensor_id IN (SELECT UNNEST(?::BIGINT[]))", [[int(i) for i in ids]]).fetchone()  # fmt: skip
    if not n:
        return [None] * len(ids)
    from studio_backend.dumps.cluster import where

    return [where.remote(ws, i) for i in ids]


# -- results on the wire ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Packed:
    """A numpy array in fewer bytes, restored exactly by ``expand``."""

    data: np.ndarray
    dtype: str
    high16: bool  # float32 values whose low 16 bits are all zero (bf16 values) sent as uint16


def _pack(a: np.ndarray) -> Any:
    if a.dtype.kind in "iu" and a.size:
        small = np.result_type(np.min_scalar_type(a.min()), np.min_scalar_type(a.max()))
        if small.itemsize < a.itemsize:
            return _Packed(a.astype(small), a.dtype.str, False)
    if a.dtype == np.float32 and a.size and a.flags.c_contiguous:
        bits = a.view(np.uint32)
        if not (bits & 0xFFFF).any():
            return _Packed((bits >> 16).astype(np.uint16), a.dtype.str, True)
    return a


def _unpack(p: _Packed) -> np.ndarray:
    if p.high16:
        return (p.data.astype(np.uint32) << 16).view(np.float32)
    return p.data.astype(np.dtype(p.dtype))


def compact(obj: Any) -> Any:
    """``obj`` in fewer bytes for the network (grids' index arrays in their smallest integer
    type, bf16-exact values as 16 bits; a grid whose values are its raw values sends them
    once). ``expand(compact(x))`` equals ``x`` exactly."""
    if isinstance(obj, Grid):
        same = obj.values is obj.raw
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        out = {k: _pack(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}
        if same:
            out["values"] = None
        return ("grid", out)
    if isinstance(obj, tuple):
        return tuple(compact(x) for x in obj)
    return obj


def expand(obj: Any) -> Any:
    if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "grid" and isinstance(obj[1], dict):
        f = {k: _unpack(v) if isinstance(v, _Packed) else v for k, v in obj[1].items()}
        if f["values"] is None:
            f["values"] = f["raw"]
        return Grid(**f)
    if isinstance(obj, tuple):
        return tuple(expand(x) for x in obj)
    return obj
