"""Combine one tensor's rank shards into the true unsharded tensor, and prove it.

``stitch`` is a pure function of the shards of one (step, module, io, index) across ranks, so it
can run in any worker. Every result names its rule, the ranks used, a verdict and the largest
absolute difference found by its check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from studio_backend.dumps import fused
from studio_backend.dumps.stitch.rules import RuleChoice


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

    def __post_init__(self) -> None:
        # A tensor whose stitch failed (or is unknown) is never handed on as if it were true:
        # the rank tensors stay available, the stitched one does not exist.
        if self.verdict in ("failed", "unknown"):
            self.tensor = None
            self.parts, self.part_slices = {}, {}


# Replicas may differ by this many ulp of the tensor's magnitude (another rounding order).
# Calibrated on real vLLM 0.32 on CPU (REFERENCE.md 2b; tests/dumps/fixtures/vllm032_tiny_kv2):
# at TP=4 replicated K/V heads differ by up to 2.4 ulp of max|x| (1.2e-7 .. 8.3e-7), the
# already-reduced experts output by <= 3e-9; 8 leaves room for deeper models, while a wrong
# head or shard differs by orders of magnitude more.
ULPS = 8.0


def tolerance(dtype: torch.dtype, scale: float, terms: int = 1) -> float:
    """Allowed |difference| for values computed in another order: ``ULPS`` ulp of ``scale`` per
    term (``terms``: how many partial results were added)."""
    eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    return ULPS * eps * max(scale, 1e-30) * max(terms, 1)


def absmax(t: torch.Tensor) -> float:
    """Largest |x| (0 for an empty tensor; NaNs ignored)."""
    if t.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(t.float().nan_to_num(nan=0.0))
    return max(abs(float(lo)), abs(float(hi)))


@dataclass(frozen=True)
class Agreement:
    """How far replicas are apart: the max |difference| and whether that is rounding only."""

    diff: float
    ok: bool
    tol: float

    def describe(self) -> str:
        if self.diff == 0:
            return "bit-identical"
        return f"equal within rounding (max |diff| {self.diff:.3g} <= {self.tol:.3g})"


def agree(shards: list[torch.Tensor], terms: int = 1) -> Agreement:
    """Compare every shard with the first: bitwise, else within ``tolerance`` of the magnitude."""
    fast = fused.agree_bf16(shards)  # one numba pass per pair (contiguous bf16 shards)
    if fast is not None:
        diff, top = fast
        if top is None or diff == 0:
            return Agreement(0.0, True, 0.0)
        tol = tolerance(shards[0].dtype, top, terms)
        return Agreement(diff, diff <= tol, tol)
    diff = max((max_diff(shards[0], s) for s in shards[1:]), default=0.0)
    if diff == 0:
        return Agreement(0.0, True, 0.0)
    if not shards[0].dtype.is_floating_point:
        return Agreement(diff, False, 0.0)
    tol = tolerance(shards[0].dtype, max(absmax(s) for s in shards), terms)
    return Agreement(diff, diff <= tol, tol)


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


def groups_from_data(shards: list[torch.Tensor]) -> list[list[int]] | None:
    """Replica groups read from the data (no config): runs of consecutive ranks that agree.

    vLLM gives KV head ``r // (tp / num_kv_heads)`` to rank r, so replicas are consecutive and
    every group has the same size; anything else is not a replication pattern (None).
    """
    groups: list[list[int]] = [[0]]
    for r in range(1, len(shards)):
        if agree([shards[groups[-1][0]], shards[r]]).ok:
            groups[-1].append(r)
        else:
            groups.append([r])
    sizes = {len(g) for g in groups}
    return groups if len(sizes) == 1 else None


def _dedup(
    shards: list[torch.Tensor], groups: list[list[int]], dim: int
) -> tuple[torch.Tensor | None, Agreement]:
    """Concatenate one shard per replica group along ``dim`` once the replicas agree."""
    worst = Agreement(0.0, True, 0.0)
    for g in groups:
        a = agree([shards[r] for r in g])
        if not a.ok:
            return None, a
        if a.diff > worst.diff:
            worst = a
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
        return _replicated(choice, shards, ranks)
    if rule == "partial_sum":
        return _partial_sum(choice, shards, ranks)
    if rule == "concat_last":
        return StitchResult(rule, "assumed", ranks, torch.cat(shards, dim=-1), max_abs_diff=0.0,
                            detail="sharded on the last dim: concatenated in rank order")  # fmt: skip
    if rule == "q_heads":
        return StitchResult(rule, "assumed", ranks, torch.cat(shards, dim=-2), max_abs_diff=0.0,
                            detail="q heads concatenated in rank order")  # fmt: skip
    if rule in ("kv_cols", "kv_heads"):
        return _kv(rule, shards, ranks, tp, heads)
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
    return StitchResult(rule, "unknown", ranks, detail=f"no stitcher for rule {rule!r}")


def _replicated(choice: RuleChoice, shards: list[torch.Tensor], ranks: list[int]) -> StitchResult:
    """Keep one copy once every rank agrees (within rounding); never keep one when they don't."""
    a = agree(shards)
    if a.ok:
        detail = "identical on all ranks" if a.diff == 0 else f"all ranks {a.describe()}"
        if choice.rule == "auto":
            detail += f" (class {choice.module_class or 'unknown'} has no rule: kept as replicated)"
        return StitchResult("replicated", "verified", ranks, shards[0], max_abs_diff=a.diff,
                            detail=detail)  # fmt: skip
    if choice.rule == "auto":
        return StitchResult("auto", "unknown", ranks, max_abs_diff=a.diff,
                            detail=f"no rule for class {choice.module_class or 'unknown'} and ranks "
                            "differ: not stitched (add an override)")  # fmt: skip
    return StitchResult(choice.rule, "failed", ranks, max_abs_diff=a.diff,
                        detail=f"ranks differ (max |diff| {a.diff:.3g} > {a.tol:.3g}) although the "
                        "tensor should be replicated: not stitched, see the rank tensors")  # fmt: skip


def _partial_sum(choice: RuleChoice, shards: list[torch.Tensor], ranks: list[int]) -> StitchResult:
    """Experts output: already reduced when the ranks agree (vLLM >= 0.32 MoERunner), else a
    partial sum per rank (FusedMoE with reduce_results=False), added and checked later against
    the parent block's output."""
    a = agree(shards)
    if a.ok:
        return StitchResult("replicated", "verified", ranks, shards[0], max_abs_diff=a.diff,
                            detail=f"all ranks {a.describe()}: the output is already reduced, "
                            "kept as replicated (not summed)")  # fmt: skip
    summed = fused.sum_bf16(shards)  # one numba pass, bit-identical to the torch lines below
    if summed is None:
        acc = shards[0].to(torch.float32, copy=True)  # never add into a rank's own tensor
        for s in shards[1:]:
            acc.add_(s)  # promotes in the kernel: no float32 temporary per rank
        summed = acc.to(shards[0].dtype)
    return StitchResult("partial_sum", "assumed", ranks, summed,
                        detail="ranks differ: partial sums added over ranks; awaiting the parent "
                        "block's output")  # fmt: skip


def _kv(
    rule: str, shards: list[torch.Tensor], ranks: list[int], tp: int, heads: Heads | None
) -> StitchResult:
    dim = -1 if rule == "kv_cols" else -2
    per_rank = shards[0].shape[-2] if rule == "kv_heads" else None
    if heads is not None and rule == "kv_cols":
        per_rank = shards[0].shape[-1] // heads.head_dim
    groups = _replica_groups(tp, heads, per_rank)
    source = "config"
    if groups is None:
        groups, source = groups_from_data(shards), "data"
        if groups is None:
            return StitchResult(rule, "unknown", ranks,
                                detail="one KV head per rank and no config.json: which ranks hold "
                                "replicas is unknown (pass --model-config)")  # fmt: skip
    full, a = _dedup(shards, groups, dim)
    if full is None:
        return StitchResult(rule, "failed", ranks, max_abs_diff=a.diff,
                            detail=f"KV replicas differ (max |diff| {a.diff:.3g} > {a.tol:.3g}): "
                            "not stitched, see the rank tensors")  # fmt: skip
    dedup = len(groups) < tp
    if dedup:
        detail = (f"KV replicas de-duplicated ({tp // len(groups)} ranks per head, groups from "
                  f"the {source}), replicas {a.describe()}")  # fmt: skip
        return StitchResult(rule, "verified", ranks, full, max_abs_diff=a.diff, detail=detail)
    return StitchResult(rule, "assumed", ranks, full, max_abs_diff=0.0,
                        detail="KV heads concatenated in rank order")  # fmt: skip


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
    worst = Agreement(0.0, True, 0.0)
    for g in groups:
        for part in (ks, vs):
            a = agree([part[r] for r in g])
            if not a.ok:
                return StitchResult("qkv", "failed", ranks, max_abs_diff=a.diff,
                                    detail=f"KV replicas differ across ranks (max |diff| {a.diff:.3g} "
                                    f"> {a.tol:.3g}): not stitched, see the rank tensors")  # fmt: skip
            worst = a if a.diff > worst.diff else worst
    keep = [g[0] for g in groups]
    full = torch.cat(qs + [ks[r] for r in keep] + [vs[r] for r in keep], dim=-1)  # one copy
    widths = {"q": q_r * tp, "k": kv_r * len(keep), "v": kv_r * len(keep)}
    dedup = len(groups) < tp
    detail = "split per rank into q|k|v, concatenated per part" + (
        f"; KV replicas ({tp // len(groups)} ranks per head) {worst.describe()}, de-duplicated"
        if dedup
        else ""
    )
    res = StitchResult("qkv", "verified", ranks, full, max_abs_diff=worst.diff,
                       detail=detail + "; widths match config")  # fmt: skip
    return _with_parts(res, widths)


def _with_parts(res: StitchResult, widths: dict[str, int]) -> StitchResult:
    """Name consecutive last-dim column ranges of ``res.tensor`` as parts (views, no copies)."""
    start = 0
    for name, w in widths.items():
        res.part_slices[name] = (start, start + w)
        res.parts[name] = res.tensor[..., start : start + w]
        start += w
    return res
