"""Level of detail: reduce a token x channel matrix to a screen-sized grid without losing outliers.

Each output cell holds the value of largest magnitude in its block, with its sign, plus the exact
token and channel it came from (so hover shows the real position of the extreme). Pooling runs in
two passes (channels, then tokens): the extreme of the block extremes is the block extreme, so
the global extreme always survives exactly.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch

from studio_backend.analysis.grid import Grid
from studio_backend.errors import InputError


def as_matrix(x: torch.Tensor | np.ndarray, *, keep_float: bool = False) -> torch.Tensor:
    """A 2-D view ``[tokens, channels]`` (leading dims flattened into tokens) in float32/64.

    ``keep_float`` keeps bf16/fp16 as they are (for reductions that are exact in any dtype).
    """
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
    if t.ndim == 0:
        raise InputError("tensor", "a scalar has no token x channel layout")
    if t.ndim == 1:
        t = t.unsqueeze(0)
    elif t.ndim > 2:
        t = t.reshape(-1, t.shape[-1])
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.int32, torch.int64)):
        raise InputError("tensor", f"cannot plot dtype {t.dtype}")
    if t.dtype in (torch.float32, torch.float64) or (keep_float and t.is_floating_point()):
        return t
    return t.float()


def _signed_extreme(blocks: torch.Tensor, dim: int) -> torch.Tensor:
    """Signed value of largest magnitude along ``dim`` (positive wins an exact tie)."""
    hi, lo = blocks.amax(dim=dim), blocks.amin(dim=dim)
    # amax/amin are plain reductions (fast); argmax over |x| needs a full abs copy (slow).
    return torch.where(hi >= -lo, hi, lo)


def pool_signed_absmax(
    x: torch.Tensor, rows: int, cols: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pool ``x [R, C]`` to at most ``rows x cols`` cells keeping each block's signed extreme.

    Returns ``(values, row_index, col_index)`` (values in float32) where the indices are the
    positions in ``x`` of each cell's extreme (the first one when several tie). Blocks are
    ``ceil(R/rows) x ceil(C/cols)``; edge blocks are padded by repeating the last real row /
    column, so padding can never create a value that is not in ``x``. Runs in ``x``'s own
    dtype (bf16 stays bf16: no full-size conversion); tokens are reduced first because that
    reduction is over a contiguous inner dimension.
    """
    r, c = x.shape
    br, bc = max(1, math.ceil(r / rows)), max(1, math.ceil(c / cols))
    nr, nc = math.ceil(r / br), math.ceil(c / bc)
    if (nr * br, nc * bc) != (r, c):
        x = torch.nn.functional.pad(
            x.unsqueeze(0), (0, nc * bc - c, 0, nr * br - r), mode="replicate"
        ).squeeze(0)
    tok_blocks = x.reshape(nr, br, nc * bc)
    # Pass 1 within token blocks: plain reductions over a contiguous inner dimension in x's
    # dtype; the (4x smaller) result goes to float32, where elementwise ops are fast on CPU.
    hi, lo = tok_blocks.amax(dim=1).float(), tok_blocks.amin(dim=1).float()
    per_col = torch.where(hi >= -lo, hi, lo)  # [nr, C']
    blocks = per_col.reshape(nr, nc, bc)
    values = _signed_extreme(blocks, 2)  # [nr, nc]: pass 2 within channel blocks
    # Locate each extreme: its channel within the block, then its token in that channel.
    j = (blocks == values.unsqueeze(2)).to(torch.uint8).argmax(dim=2)  # first match
    col = j + torch.arange(nc).unsqueeze(0) * bc  # [nr, nc]
    seg = torch.gather(tok_blocks, 2, col.unsqueeze(1).expand(nr, br, nc))  # [nr, br, nc]
    seg = seg.float().transpose(1, 2).contiguous()  # argmax over a contiguous last dim
    i = (seg == values.unsqueeze(2)).to(torch.uint8).argmax(dim=2)
    row = i + torch.arange(nr).unsqueeze(1) * br
    # Replicated padding points past the edge: the same value sits at the last real index.
    return values, row.clamp(max=r - 1), col.clamp(max=c - 1)


# Drawn-cell budgets of the surface: WebGL surface geometry is built and drawn per cell, so the
# cell count sets the redraw time (docs/PERFORMANCE.md "Activations page interaction").
DEFAULT_CELLS = 80_000


def grid_shape(n_tokens: int, n_channels: int, cells: int = DEFAULT_CELLS) -> tuple[int, int]:
    """``(max_tokens, max_channels)`` for at most ``cells`` drawn cells.

    Two channel cells per token cell (the scene is wider along channels); what a short axis
    does not use goes to the other one, so a 40-token tensor keeps all its channels.
    """
    if cells < 1:
        raise InputError("grid", f"a budget of {cells} cells draws nothing")
    rows = max(1, min(n_tokens, math.isqrt(cells // 2)))
    cols = max(1, min(n_channels, cells // rows))
    rows = max(1, min(n_tokens, cells // cols))
    return rows, cols


def transform(values: np.ndarray, *, absolute: bool = False, log: bool = False) -> np.ndarray:
    """Value transform for display: ``|x|`` and/or signed ``log10(1 + |x|)``.

    Both are monotone in ``|x|``, so applying them after pooling equals pooling after them.
    """
    out = np.abs(values) if absolute else values
    if log:
        out = np.sign(out) * np.log10(1.0 + np.abs(out))
    return out


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_channels(spec: str, n_channels: int) -> np.ndarray:
    """Channels from ``"0-127, 300, 4000-4095"`` (inclusive ranges); empty means all."""
    if not spec.strip():
        return np.arange(n_channels)
    picked: list[int] = []
    for part in spec.split(","):
        m = _RANGE.match(part)
        if not m:
            raise InputError("channel filter", f"cannot read {part.strip()!r} (use e.g. 0-127,300)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo > hi or hi >= n_channels:
            raise InputError("channel filter", f"{part.strip()} is outside 0-{n_channels - 1}")
        picked.extend(range(lo, hi + 1))
    return np.unique(np.asarray(picked, dtype=np.int64))


def build_grid(
    x: torch.Tensor | np.ndarray,
    *,
    max_tokens: int = 400,
    max_channels: int = 800,
    token_range: tuple[int, int] | None = None,
    channels: np.ndarray | None = None,
    sort_channels: bool = False,
    absolute: bool = False,
    log: bool = False,
) -> Grid:
    """Select tokens/channels, optionally sort channels by absmax, pool, transform."""
    m = as_matrix(x, keep_float=True)
    n_tok, n_ch = m.shape
    t0, t1 = token_range if token_range is not None else (0, n_tok)
    if not 0 <= t0 < t1 <= n_tok:
        raise InputError("token range", f"{t0}-{t1} is outside 0-{n_tok}")
    m = m[t0:t1]
    ch = np.arange(n_ch) if channels is None else np.asarray(channels, dtype=np.int64)
    if ch.size == 0:
        raise InputError("channel filter", "selects no channel")
    if channels is not None:
        m = m[:, torch.from_numpy(ch)]
    if sort_channels:
        order = torch.argsort(m.abs().amax(dim=0), descending=True, stable=True)
        m = m[:, order]
        ch = ch[order.numpy()]
    pooled = m.shape[0] > max_tokens or m.shape[1] > max_channels
    values, row, col = pool_signed_absmax(m, max_tokens, max_channels)
    raw = values.numpy()
    br = math.ceil(m.shape[0] / values.shape[0])
    bc = math.ceil(m.shape[1] / values.shape[1])
    positions = np.arange(values.shape[1]) * bc
    return Grid(
        values=transform(raw, absolute=absolute, log=log),
        raw=raw,
        tokens=row.numpy() + t0,
        channels=ch[col.numpy()],
        token_axis=np.arange(values.shape[0]) * br + t0,
        channel_axis=positions if sort_channels else ch[positions],
        pooled=pooled,
        source_shape=(int(m.shape[0]), int(m.shape[1])),
    )
