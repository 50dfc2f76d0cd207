"""The expected tensor-parallel size of a run, known rather than inferred from the folders present
(issue 17 item 1).

Evidence, strongest first: ranks.json (it lists every rank), the launch that wrote the dump (its
tensor-parallel size, when the studio launched the engine), rank numbers in the folder names
(msprobe ``rank<R>``, SGLang ``TP<t>``: a folder ``rank1`` alone means tp >= 2), and the shard
widths of attention projections against config.json (o_proj input = heads x head_dim / tp; the
qkv_proj output per rank depends on tp through the query and KV heads). The folder count is the
fallback, and is then marked as assumed. A missing rank is an error, never a tp of 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from studio_backend.dumps.stitch.stitcher import Heads

# (module name suffix, io, idx): tensors whose last dimension is sharded over tp
WIDTH_PROBES = (("o_proj", "input", 0), ("qkv_proj", "output", 0))


@dataclass(frozen=True)
class Expected:
    """The tp a run must have and why; ``known`` False: only the folders present say so."""

    tp: int
    source: str
    known: bool


def config_problems(cfg: dict[str, Any] | None) -> list[str]:
    """What in config.json makes the head geometry unusable (QKV split, width checks)."""
    if not cfg:
        return []
    out = []
    for key in ("num_attention_heads", "num_key_value_heads", "head_dim", "hidden_size"):
        v = cfg.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            out.append(f"config.json {key} = {v!r} is not a positive integer")
    return out


def heads_of(cfg: dict[str, Any] | None) -> Heads | None:
    """The head geometry, or None when config.json lacks it or it is not positive integers."""
    if config_problems(cfg):
        return None
    h = Heads.from_config(cfg)
    if h is None or min(h.num_heads, h.num_kv_heads, h.head_dim) <= 0:
        return None
    return h


def width_for(heads: Heads, module: str, io: str, tp: int) -> int | None:
    """The last-dim width of one rank's shard of a probe tensor at ``tp``; None: not defined."""
    if heads.num_heads % tp:
        return None
    q = heads.num_heads // tp * heads.head_dim
    if module.endswith("o_proj") and io == "input":
        return q
    if module.endswith("qkv_proj") and io == "output":
        if tp <= heads.num_kv_heads:
            if heads.num_kv_heads % tp:
                return None
            kv = heads.num_kv_heads // tp * heads.head_dim
        else:
            kv = heads.head_dim  # each rank holds one replicated KV head
        return q + 2 * kv
    return None


def tp_from_widths(
    heads: Heads | None, shapes: Iterable[tuple[str, str, int, list[int]]]
) -> tuple[int, str] | None:
    """tp from the width of a sharded projection: (tp, why) for the first shape that decides."""
    if heads is None:
        return None
    found: list[tuple[int, str]] = []
    for module, io, idx, shape in shapes:
        if not shape or idx != 0:
            continue
        width = int(shape[-1])
        fits = [
            tp for tp in range(1, heads.num_heads + 1) if width_for(heads, module, io, tp) == width
        ]
        if len(fits) == 1:
            full = width_for(heads, module, io, 1)
            found.append((fits[0], f"{module} {io} width {width} of {full} (config.json)"))
    # probes that disagree mean the config does not describe these shards: no evidence
    return found[0] if found and len({tp for tp, _ in found}) == 1 else None


def ranks_json_count(ranks_json: Any) -> int | None:
    """How many ranks a ranks.json lists (list or {folder: rank}), or None."""
    if isinstance(ranks_json, dict) and isinstance(ranks_json.get("ranks"), dict | list):
        ranks_json = ranks_json["ranks"]
    if isinstance(ranks_json, list | dict) and ranks_json:
        return len(ranks_json)
    return None


def decide(
    *,
    present: int,
    ranks_json: int | None = None,
    folder_ranks: Iterable[int | None] = (),
    widths: tuple[int, str] | None = None,
    launch: tuple[int, str] | None = None,
) -> Expected:
    """Combine the evidence: the largest tp any of it proves (a shard can only be missing).
    ``launch``: (tp, name) of the launch that wrote the dump."""
    numbered = [r for r in folder_ranks if r is not None]
    proofs = []
    if ranks_json:
        proofs.append(Expected(ranks_json, f"ranks.json lists {ranks_json} rank(s)", True))
    if launch is not None and launch[0] >= 1:
        proofs.append(Expected(launch[0], f"{launch[1]} ran with tp={launch[0]}", True))
    if numbered and max(numbered) + 1 > present:
        proofs.append(Expected(max(numbered) + 1, f"a folder is named rank {max(numbered)}", True))
    if widths is not None:
        proofs.append(Expected(widths[0], f"shard width: {widths[1]}", True))
    if not proofs:
        return Expected(max(present, 1), f"{present} rank folder(s) present (assumed)", False)
    top = max(proofs, key=lambda e: e.tp)
    if top.tp < present:
        return Expected(present, f"{present} rank folders present (more than {top.source})", True)
    return top


def probe_files(layout: Any, limit: int = 4) -> list[tuple[str, str, int, list[int]]]:
    """Shapes of a few attention-projection files of the dump (headers only, memory-mapped;
    non-regular files are never opened). SGLang containers are not probed: their folder names
    carry the TP rank."""
    from studio_backend.dumps.file_checks import name_problem, not_regular
    from studio_backend.dumps.formats.common import load_tensor_file
    from studio_backend.errors import InputError

    if layout.format == "msit":
        globs = [(rf.path, f"*/*{m}*/*.pt*") for rf in layout.folders.values()
                 for m, _io, _i in WIDTH_PROBES]  # fmt: skip
    elif layout.format == "msprobe":
        globs = [(layout.root, f"step*/*/dump_tensor_data/*{m}*") for m, _io, _i in WIDTH_PROBES]
    else:
        return []
    out: list[tuple[str, str, int, list[int]]] = []
    for base, pattern in globs:
        for f in base.glob(pattern):
            if name_problem(f) or not_regular(f):
                continue
            ref = layout.parse(f)
            if ref is None or (ref.module.rsplit(".", 1)[-1], ref.io, ref.idx) not in WIDTH_PROBES:
                continue
            try:
                shape = list(load_tensor_file(f).shape)
            except (InputError, OSError, RuntimeError, ValueError):
                continue
            out.append((ref.module, ref.io, ref.idx, shape))
            break  # one file per pattern is enough
        if len(out) >= limit:
            break
    return out


def of_layout(
    layout: Any,
    ranks_json: Any,
    shapes: list | None = None,
    launch: tuple[int, str] | None = None,
) -> Expected:
    """The expected tp of a detected layout (``shapes``: catalogued probe shapes, if known;
    ``launch``: (tp, name) of the launch that wrote it)."""
    heads = heads_of(layout.model_config)
    widths = tp_from_widths(heads, shapes if shapes else probe_files(layout)) if heads else None
    return decide(
        present=len(set(layout.ranks.values())),
        ranks_json=ranks_json_count(ranks_json),
        folder_ranks=[rf.rank for rf in layout.folders.values()],
        widths=widths,
        launch=launch,
    )


def catalogued_shapes(ws: Any, run_id: str) -> list[tuple[str, str, int, list[int]]]:
    """Probe shapes among the rank tensors already recorded (watch mode: files arrive late)."""
    return [
        (m, io, int(idx), list(shape))
        for m, io, idx, shape in ws.cursor()
        .execute(
            "SELECT module, io, idx, shape FROM dump_tensors WHERE run_id = ? AND rank IS NOT NULL "
            "AND idx = 0 AND ((io = 'input' AND module LIKE '%o_proj') OR "
            "(io = 'output' AND module LIKE '%qkv_proj')) LIMIT 4",
            [run_id],
        )
        .fetchall()
    ]
