"""Combine one tensor's rank shards into the true unsharded tensor, and prove it.

``stitch`` is a pure function of the shards of one (step, module, io, index) across ranks, so it
can run in any worker. Every result names its rule, the ranks used, a verdict and the largest
absolute difference found by its check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backend.dumps.stitch.rules import RuleChoice


@dataclass(frozen=True)
class Heads:
    """Attention geometry needed to split QKV and de-duplicate KV replicas."""

    num_heads: int
    num_kv_heads: int
    head_dim: int

    @classmethod
    def from_config(cls, cfg: dict | None) -> Heads | None:
        if not cfg:
            return None
        try:
            nh = int(cfg["num_attention_heads"])
            kvh = int(cfg.get("num_key_value_heads") or nh)
            hd = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // nh)
        except (KeyError, TypeError, ValueError):
            return None
        return cls(nh, kvh, hd)


@dataclass
class StitchResult:
    rule: str
    verdict: str  # 'verified' | 'assumed' | 'failed' | 'unknown'
    ranks: list[int]
    tensor: torch.Tensor | None = None
    # named parts (q/k/v, gate/up) are views of ``tensor``: columns [start, end) of its last dim
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    part_slices: dict[str, tuple[int, int]] = field(default_factory=dict)
    max_abs_diff: float | None = None
    detail: str = ""


def tolerance(dtype: torch.dtype, scale: float, terms: int = 1) -> float:
    """Allowed |difference| for sums computed in another order (about 4 ulp per term)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return 4.0 * eps * max(scale, 1e-30) * max(terms, 1)


_CHUNK = 1 << 20  # words per numpy call (8 MB): few GIL round trips, early exit for big tensors


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and bytes (memcmp speed; numpy releases the GIL so threads overlap)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    try:
        x = a.contiguous().reshape(-1).view(torch.uint8).numpy()
        y = b.contiguous().reshape(-1).view(torch.uint8).numpy()
    except (RuntimeError, TypeError):  # dtypes numpy cannot view: let torch decide
        return bool(torch.equal(a, b))
    if x.size % 8 == 0:
        x, y = x.view(np.uint64), y.view(np.uint64)
    for i in range(0, x.size, _CHUNK):
        if not np.array_equal(x[i : i + _CHUNK], y[i : i + _CHUNK]):
            return False
    return True


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0 or bitwise_equal(a, b):  # the common case, and cheap
        return 0.0
    if not a.dtype.is_floating_point:
        return float((a.to(torch.int64) - b.to(torch.int64)).abs().max())
    # one float32 temporary: the subtraction promotes b in the kernel, abs is in place
    d = float(a.to(torch.float32, copy=True).sub_(b).abs_().max())
    if d == d:
        return d
    # NaN in the same places on both ranks is equal; elsewhere it is a difference.
    same_nan = torch.isnan(a) & torch.isnan(b)
    dd = torch.where(same_nan, torch.zeros((), dtype=torch.float32), (a.float() - b.float()).abs())
    return float("inf") if torch.isnan(dd).any() else float(dd.max())


def _replica_groups(
    tp: int, heads: Heads | None, per_rank_heads: int | None
) -> list[list[int]] | None:
    """Rank groups holding the same KV heads; None when that cannot be known."""
    if heads is not None:
        if tp <= heads.num_kv_heads:
            return [[r] for r in range(tp)]
        rep = tp // heads.num_kv_heads
        return [list(range(j * rep, (j + 1) * rep)) for j in range(heads.num_kv_heads)]
    if per_rank_heads is not None and per_rank_heads > 1:
        return [[r] for r in range(tp)]  # replication implies exactly one KV head per rank
    return None


def _dedup(
    shards: list[torch.Tensor], groups: list[list[int]], dim: int
) -> tuple[torch.Tensor, float]:
    """Concatenate one shard per replica group along ``dim``; max diff inside the groups."""
    worst = 0.0
    for g in groups:
        for r in g[1:]:
            worst = max(worst, max_diff(shards[g[0]], shards[r]))
    return torch.cat([shards[g[0]] for g in groups], dim=dim), worst


def _shape_error(
    shards: list[torch.Tensor], ranks: list[int], rule: str, dim: int | None
) -> str | None:
    s0 = shards[0].shape
    for r, s in zip(ranks, shards, strict=True):
        if s.dim() != len(s0):
            return f"rank {r} has shape {list(s.shape)}, rank {ranks[0]} {list(s0)}"
        for d in range(len(s0)):
            if (dim is None or d != dim % len(s0)) and s.shape[d] != s0[d]:
                return f"rank {r} has shape {list(s.shape)}, rank {ranks[0]} {list(s0)}"
        if s.dtype != shards[0].dtype:
            return f"rank {r} has dtype {s.dtype}, rank {ranks[0]} {shards[0].dtype}"
    return None


def stitch(
    choice: RuleChoice,
    shards_by_rank: dict[int, torch.Tensor],
    tp: int,
    heads: Heads | None = None,
) -> StitchResult:
    """Stitch one tensor from its shards ``{rank: tensor}`` (all ``tp`` ranks present)."""
    ranks = sorted(shards_by_rank)
    shards = [shards_by_rank[r] for r in ranks]
    rule = choice.rule
    if len(ranks) != tp or ranks != list(range(tp)):
        missing = sorted(set(range(tp)) - set(ranks))
        return StitchResult(rule, "failed", ranks, detail=f"missing rank(s) {missing} of tp={tp}")
    if tp == 1 and rule not in ("qkv", "gate_up"):
        return StitchResult(
            "single_rank", "verified", ranks, shards[0], max_abs_diff=0.0,
            detail="one rank: the tensor is already whole",
        )  # fmt: skip

    cat_dim = {
        "concat_last": -1,
        "kv_cols": -1,
        "qkv": -1,
        "gate_up": -1,
        "q_heads": -2,
        "kv_heads": -2,
    }
    err = _shape_error(shards, ranks, rule, cat_dim.get(rule))
    if err:
        return StitchResult(rule, "failed", ranks, detail=f"shape mismatch: {err}")

    if rule in ("replicated", "auto"):
        diff = max(max_diff(shards[0], s) for s in shards[1:])
        ok = diff == 0
        if not ok and shards[0].dtype.is_floating_point:  # the scale costs a pass: only if needed
            scale = float(shards[0].float().abs().max()) if shards[0].numel() else 0.0
            ok = diff <= tolerance(shards[0].dtype, scale)
        if ok:
            detail = "identical on all ranks" if diff == 0 else "equal on all ranks within rounding"
            if rule == "auto":
                detail += (
                    f" (class {choice.module_class or 'unknown'} has no rule: kept as replicated)"
                )
            return StitchResult(
                "replicated", "verified", ranks, shards[0], max_abs_diff=diff, detail=detail
            )
        if rule == "auto":
            return StitchResult("auto", "unknown", ranks, max_abs_diff=diff,
                                detail=f"no rule for class {choice.module_class or 'unknown'} and ranks "
                                "differ: not stitched (add an override)")  # fmt: skip
        return StitchResult(rule, "failed", ranks, shards[0], max_abs_diff=diff,
                            detail="ranks differ although the output should be replicated")  # fmt: skip

    if rule == "concat_last":
        return StitchResult(rule, "assumed", ranks, torch.cat(shards, dim=-1), max_abs_diff=0.0,
                            detail="sharded on the last dim: concatenated in rank order")  # fmt: skip
    if rule == "q_heads":
        return StitchResult(rule, "assumed", ranks, torch.cat(shards, dim=-2), max_abs_diff=0.0,
                            detail="q heads concatenated in rank order")  # fmt: skip
    if rule in ("kv_cols", "kv_heads"):
        dim = -1 if rule == "kv_cols" else -2
        per_rank = shards[0].shape[-2] if rule == "kv_heads" else None
        if heads is not None and rule == "kv_cols":
            per_rank = shards[0].shape[-1] // heads.head_dim
        groups = _replica_groups(tp, heads, per_rank)
        if groups is None:
            return StitchResult(rule, "unknown", ranks,
                                detail="one KV head per rank: replication unknown without config.json "
                                "(pass --model-config)")  # fmt: skip
        full, diff = _dedup(shards, groups, dim)
        if diff > 0:
            return StitchResult(
                rule, "failed", ranks, full, max_abs_diff=diff, detail="KV replicas differ"
            )
        dedup = len(groups) < tp
        verdict = "verified" if dedup else "assumed"
        detail = (
            f"KV replicas de-duplicated ({tp // len(groups)} ranks per head), replicas equal"
            if dedup
            else "KV heads concatenated in rank order"
        )
        return StitchResult(rule, verdict, ranks, full, max_abs_diff=diff, detail=detail)
    if rule == "qkv":
        return _stitch_qkv(shards, ranks, tp, heads)
    if rule == "gate_up":
        width = shards[0].shape[-1]
        if width % 2:
            return StitchResult(rule, "failed", ranks, detail=f"odd gate_up width {width}")
        h = width // 2  # tp=1: plain halves
        full = torch.cat([s[..., :h] for s in shards] + [s[..., h:] for s in shards], dim=-1)
        res = StitchResult(rule, "verified" if tp == 1 else "assumed", ranks, full, max_abs_diff=0.0,
                           detail="each rank's [gate|up] split in halves, then concatenated")  # fmt: skip
        return _with_parts(res, {"gate": h * tp, "up": h * tp})
    if rule == "partial_sum":
        acc = shards[0].to(torch.float32, copy=True)  # never add into a rank's own tensor
        for s in shards[1:]:
            acc.add_(s)  # promotes in the kernel: no float32 temporary per rank
        return StitchResult(rule, "assumed", ranks, acc.to(shards[0].dtype),
                            detail="partial sums added over ranks; awaiting the parent block's output")  # fmt: skip
    return StitchResult(rule, "unknown", ranks, detail=f"no stitcher for rule {rule!r}")


def _stitch_qkv(
    shards: list[torch.Tensor], ranks: list[int], tp: int, heads: Heads | None
) -> StitchResult:
    if heads is None:
        return StitchResult("qkv", "unknown", ranks,
                            detail="QKV split needs head counts: add config.json to the dump or pass "
                            "--model-config")  # fmt: skip
    q_r = heads.num_heads // tp * heads.head_dim
    kv_r = max(1, heads.num_kv_heads // tp) * heads.head_dim
    width = shards[0].shape[-1]
    if heads.num_heads % tp or width != q_r + 2 * kv_r:
        return StitchResult("qkv", "failed", ranks,
                            detail=f"rank width {width} != q {q_r} + 2 x kv {kv_r} from the config (tp={tp})")  # fmt: skip
    qs = [s[..., :q_r] for s in shards]
    ks = [s[..., q_r : q_r + kv_r] for s in shards]
    vs = [s[..., q_r + kv_r :] for s in shards]
    groups = _replica_groups(tp, heads, None)
    assert groups is not None
    diff = 0.0
    for g in groups:
        for r in g[1:]:
            diff = max(diff, max_diff(ks[g[0]], ks[r]), max_diff(vs[g[0]], vs[r]))
    keep = [g[0] for g in groups]
    full = torch.cat(qs + [ks[r] for r in keep] + [vs[r] for r in keep], dim=-1)  # one copy
    widths = {"q": q_r * tp, "k": kv_r * len(keep), "v": kv_r * len(keep)}
    if diff > 0:
        res = StitchResult("qkv", "failed", ranks, full, max_abs_diff=diff,
                           detail="KV replicas differ across ranks")  # fmt: skip
        return _with_parts(res, widths)
    dedup = len(groups) < tp
    detail = "split per rank into q|k|v, concatenated per part" + (
        f"; KV replicas ({tp // len(groups)} ranks per head) verified equal and de-duplicated"
        if dedup
        else ""
    )
    res = StitchResult(
        "qkv", "verified", ranks, full, max_abs_diff=diff, detail=detail + "; widths match config"
    )
    return _with_parts(res, widths)


def _with_parts(res: StitchResult, widths: dict[str, int]) -> StitchResult:
    """Name consecutive last-dim column ranges of ``res.tensor`` as parts (views, no copies)."""
    start = 0
    for name, w in widths.items():
        res.part_slices[name] = (start, start + w)
        res.parts[name] = res.tensor[..., start : start + w]
        start += w
    return res
