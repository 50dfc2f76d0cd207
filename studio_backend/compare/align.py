"""Pair the tensors of two runs: steps by position, modules by canonical name and role.

Every stitched (true, unsharded) tensor of both runs ends up in exactly one place: a ``Pair``
(compared), ``unaligned`` (with the reason), or ``notes`` (a duplicate of a tensor that is
compared, e.g. Hugging Face ``k_proj``'s input is ``q_proj``'s). Nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pandas as pd

from studio_backend.analysis import parts, source
from studio_backend.compare import align_rules as R
from studio_backend.dumps.axis import matrix_shape
from studio_backend.errors import InputError, StudioError
from studio_backend.workspace import Workspace

Key = tuple[str, str, object, str | None, int]  # (canonical module, io, index, part, call)
_LAYER = re.compile(r"^layers\.(\d+)(?:\.(.*))?$")
_INT = ("int", "uint", "bool")


@dataclass(frozen=True)
class Ref:
    """One side of a pair: a stored tensor, or a part split from a stored fused tensor."""

    run_id: str
    step: int
    tensor_id: int
    module: str
    io: str
    idx: int
    arg_name: str | None
    part: str | None  # the part this ref stands for (stored or split)
    split: bool  # True: split ``part`` from the whole stored tensor
    token_dims: int
    dtype: str
    matrix: tuple[int, int]  # [tokens, channels] after the split and the token axis

    @property
    def integer(self) -> bool:
        return self.dtype.lower().startswith(_INT)

    @property
    def label(self) -> str:
        p = f"[{self.part}]" if self.part else ""
        i = self.arg_name if self.idx == -1 and self.arg_name else str(self.idx)
        return f"{self.module}{p} {self.io}_{i}"


@dataclass(frozen=True)
class Pair:
    order: tuple
    key: Key
    a: Ref
    b: Ref

    @property
    def label(self) -> str:
        return self.a.label


@dataclass
class Alignment:
    run_a: str
    run_b: str
    conventions: tuple[str | None, str | None]
    formats: tuple[str, str] = ("", "")
    pairs: list[Pair] = field(default_factory=list)
    unaligned: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    configs: tuple[dict, dict] = ({}, {})  # the runs' config.json (splitting fused parts)

    def unaligned_frame(self) -> pd.DataFrame:
        cols = ["run", "step", "module", "io", "index", "part", "reason"]
        return pd.DataFrame(self.unaligned, columns=cols)


def canonical(module: str) -> str:
    """The module path without wrapper prefixes (``root.model.layers.0`` -> ``layers.0``)."""
    comps = module.split(".")
    while comps and comps[0] in R.WRAPPERS:
        comps.pop(0)
    path = ".".join(comps)
    for pattern, repl in R.RENAMES:
        path = pattern.sub(repl, path)
    return path


def convention(modules: list[str]) -> str | None:
    for name, pattern in R.CONVENTION_EVIDENCE:
        if any(pattern.search(m) for m in modules):
            return name
    return None


def order_key(key: Key) -> tuple:
    """Position of a tensor in forward order (rules: align_rules.LAYER_ORDER / TOP_*)."""
    canon, io, idx, part, call = key
    tail = (0 if io == "input" else 1, str(idx), part or "", call)
    m = _LAYER.match(canon)
    if m:
        rest = m.group(2) or ""
        for i, (path, where) in enumerate(R.LAYER_ORDER):
            if path == rest and where in (io, "*"):
                return (1, int(m.group(1)), i, "", *tail)
        return (1, int(m.group(1)), len(R.LAYER_ORDER) - 1.5, rest, *tail)
    if canon == "" and io == "output":
        return (3, 0, 0, "", *tail)
    if canon in R.TOP_BEFORE:
        return (0, 0, R.TOP_BEFORE.index(canon), "", *tail)
    if canon in R.TOP_AFTER:
        return (2, 0, R.TOP_AFTER.index(canon), "", *tail)
    return (2, 0, len(R.TOP_AFTER), canon, *tail)


def _index_key(leaf: str, io: str, idx: int, arg: str | None) -> object:
    if idx == -1 and arg:
        pos = R.KWARG_POSITIONS.get((leaf, arg))
        return pos if pos is not None else f"kw:{arg}"
    if io == "output" and arg and not re.fullmatch(r"\d+\.[A-Za-z_]\w*", arg):
        return f"{idx}:{arg}"  # a nested output (msit output_0_1); a ModelOutput field is idx
    return idx


def _none(v: object) -> object:
    return None if v is None or (isinstance(v, float) and v != v) else v


@dataclass
class _Catalog:
    """What alignment needs of one run, read in a few queries (not a few per step)."""

    config: dict
    format: str
    steps: list[int]
    modules: list[str]
    stitched: dict[int, list[tuple]]  # step -> rows of _CATALOG_COLS, find_tensors' order
    not_stitched: dict[int, list[tuple]]  # step -> (module, io, idx, verdict, detail)


_CATALOG_COLS = "tensor_id, module, io, idx, arg_name, part, shape, dtype, call_index, token_dims"
_Row = tuple  # one row of _CATALOG_COLS


def _catalog(ws: Workspace, run_id: str) -> _Catalog:
    cur = ws.cursor()
    meta = cur.execute(
        "SELECT format, model_config FROM dump_runs WHERE run_id = ?", [run_id]
    ).fetchone()
    if meta is None:
        raise StudioError(f"no dump run {run_id!r} in this workspace")
    fmt, raw = meta
    config = json.loads(raw) if isinstance(raw, str) else dict(raw) if raw else {}
    sm = cur.execute(
        "SELECT step, list(DISTINCT module) FROM dump_tensors WHERE run_id = ? GROUP BY step "
        "ORDER BY step",
        [run_id],
    ).fetchall()
    stitched: dict[int, list[tuple]] = {}
    rows = cur.execute(
        f"SELECT step, {_CATALOG_COLS} FROM dump_tensors LEFT JOIN dump_axes USING (tensor_id) "  # noqa: S608 - constant columns
        "WHERE run_id = ? AND rank IS NULL "
        "ORDER BY step, layer NULLS FIRST, module, io, idx, part NULLS FIRST",  # find_tensors'
        [run_id],
    ).fetchall()
    for r in rows:
        stitched.setdefault(int(r[0]), []).append(r[1:])
    bad: dict[int, list[tuple]] = {}
    for r in cur.execute(
        "SELECT step, module, io, idx, verdict, detail FROM dump_stitch_report "
        "WHERE run_id = ? AND verdict IN ('failed', 'unknown') ORDER BY step, module, io, idx",
        [run_id],
    ).fetchall():
        bad.setdefault(int(r[0]), []).append(r[1:])
    modules = sorted({m for _s, ms in sm for m in ms})
    return _Catalog(config, str(fmt), [int(r[0]) for r in sm], modules, stitched, bad)


def entries(
    ws: Workspace, run_id: str, step: int, config: dict, rows: list[_Row]
) -> tuple[dict[Key, Ref], list[str]]:
    """Canonical key -> Ref for one step of a run (its catalog ``rows``), and notes on
    duplicates."""
    out: dict[Key, Ref] = {}
    notes: list[str] = []
    for tid, module, io, idx, arg, part, shape, dtype, call, dims in rows:
        tid, idx = int(tid), int(idx)
        if dims is None:
            from studio_backend.dumps import axis_store

            dims = axis_store.get(ws, tid).token_dims
        arg, part = _none(arg), _none(part)
        canon = canonical(module)
        parent, _, leaf = canon.rpartition(".")
        if leaf in R.SPLIT_TO_FUSED:
            fused, fpart, alias = R.SPLIT_TO_FUSED[leaf]
            canon = f"{parent}.{fused}" if parent else fused
            if io == "output":
                part = fpart
            elif alias is not None:
                notes.append(f"{run_id}: {module} {io}_{idx} is the same tensor as {alias}'s "
                             f"(compared once, as {canon} input)")  # fmt: skip
                continue
        shape = [int(s) for s in shape]
        k = min(int(dims), len(shape))
        key: Key = (canon, io, _index_key(leaf, io, idx, arg), part, int(call or 0))
        ref = Ref(run_id, step, tid, module, io, idx, arg, part, False, k, str(dtype),
                  matrix_shape(shape, k))  # fmt: skip
        if key in out and out[key].split:
            out[key] = ref  # a stored part wins over the same part split here
            continue
        if key in out:
            notes.append(f"{run_id}: {ref.label} repeats {out[key].label} (compared once)")
            continue
        out[key] = ref
        # Parts not stored are split from the whole fused output (config.json head counts).
        if part is None and parts.parts_of(module, io) and shape:
            try:
                ranges = parts.part_sizes(module, config, shape[-1])
            except InputError:
                continue
            for p, (lo, hi) in ranges.items():
                pk = (*key[:3], p, key[4])
                if pk not in out:
                    t, _c = matrix_shape(shape, k)
                    out[pk] = Ref(run_id, step, tid, module, io, idx, arg, p, True, k,
                                  str(dtype), (t, (hi - lo) * _c // shape[-1]))  # fmt: skip
    return out, notes


def _format_specific(key: Key, formats: tuple[str, str]) -> str | None:
    if formats[0] == formats[1]:
        return None
    for fmt, pattern, reason in R.FORMAT_SPECIFIC:
        if fmt in formats and pattern.search(key[0]):
            return reason
    return None


def _specific(key: Key) -> str | None:
    canon, io, idx, _part, _call = key
    for pattern, where, index, reason in R.CONVENTION_SPECIFIC:
        if where == io and pattern.search(canon) and (index is None or index == idx):
            return reason
    return None


def _row(side: str, ref: Ref, reason: str) -> dict:
    idx = ref.arg_name if ref.idx == -1 and ref.arg_name else ref.idx
    return {"run": side, "step": ref.step, "module": ref.module, "io": ref.io, "index": idx,
            "part": ref.part, "reason": reason}  # fmt: skip


def _pair_step(al: Alignment, sa: int, sb: int, ea: dict, eb: dict, rx) -> None:
    common = set(ea) & set(eb)
    wholes = {k[:3] + (k[4],) for k in common if k[3] is None}
    # Both have the whole fused tensor: its parts are not compared again.
    common = {k for k in common if k[3] is None or k[:3] + (k[4],) not in wholes}
    parted = {k[:3] + (k[4],) for k in common if k[3] is not None}
    same_conv = al.conventions[0] == al.conventions[1]
    for side, mine in (("A", ea), ("B", eb)):
        for key, ref in mine.items():
            if key in common or (rx and not rx.search(ref.module)):
                continue
            base = key[:3] + (key[4],)
            if (key[3] is None and base in parted) or (key[3] is not None and base in wholes):
                continue  # compared through its parts / its whole
            if ref.split and base not in parted:
                continue  # a split part of a whole that is itself listed
            why = (None if same_conv else _specific(key)) or _format_specific(key, al.formats)
            if why is None:
                why = f"no tensor with this role in run {'B' if side == 'A' else 'A'}"
            al.unaligned.append(_row(side, ref, why))
    for key in sorted(common, key=order_key):
        a, b = ea[key], eb[key]
        if rx and not (rx.search(a.module) or rx.search(b.module)):
            continue
        why = (None if same_conv else _specific(key)) or _format_specific(key, al.formats)
        if why is None and a.integer != b.integer:
            why = f"dtypes differ in kind: {a.dtype} vs {b.dtype}"
        if why is None and a.matrix != b.matrix:
            why = (f"[tokens, channels] differ: {list(a.matrix)} vs {list(b.matrix)} (tokens are "
                   "paired by position, so the prompts or batches must match)")  # fmt: skip
        if why is not None:
            al.unaligned.append(_row("A", a, why))
            al.unaligned.append(_row("B", b, why))
            continue
        al.pairs.append(Pair((sa, *order_key(key)), key, a, b))


def _not_stitched(al: Alignment, side: str, cat: _Catalog, step: int) -> None:
    for module, io, idx, verdict, detail in cat.not_stitched.get(step, []):
        al.unaligned.append({
            "run": side, "step": step, "module": module, "io": io, "index": int(idx),
            "part": None, "reason": f"stitch {verdict}: no true tensor ({detail})",
        })  # fmt: skip


def align(
    ws: Workspace,
    run_a: str,
    run_b: str,
    *,
    steps: list[int] | None = None,
    modules: str | None = None,
) -> Alignment:
    """Pair the stitched tensors of two runs. ``steps``: positions in each run's step list
    (0 = first step, the prefill); ``modules``: regex searched in either run's module name."""
    rx = re.compile(source.check_regex(modules)) if modules else None
    cat_a, cat_b = _catalog(ws, run_a), _catalog(ws, run_b)
    steps_a, steps_b = cat_a.steps, cat_b.steps
    if not steps_a or not steps_b:
        empty = run_a if not steps_a else run_b
        raise StudioError(f"run {empty} has no tensors (a statistics-only dump compares by "
                          "statistics: see `studio compare --help`)")  # fmt: skip
    positions = range(max(len(steps_a), len(steps_b)))
    wanted = set(steps) if steps is not None else set(positions)
    bad = sorted(s for s in wanted if s < 0 or s >= len(positions))
    if bad:
        raise InputError(f"--steps {bad}", f"runs have {len(steps_a)} and {len(steps_b)} steps")
    al = Alignment(
        run_a,
        run_b,
        (convention(cat_a.modules), convention(cat_b.modules)),
        (cat_a.format, cat_b.format),
        configs=(cat_a.config, cat_b.config),
    )
    for pos in sorted(wanted):
        if pos >= len(steps_a) or pos >= len(steps_b):
            side, run, st = ("A", run_a, steps_a) if pos < len(steps_a) else ("B", run_b, steps_b)
            al.unaligned.append({"run": side, "step": st[pos], "module": "(whole step)",
                                 "io": None, "index": None, "part": None,
                                 "reason": f"step {st[pos]} (position {pos}) exists only in "
                                           f"run {side}"})  # fmt: skip
            continue
        sa, sb = steps_a[pos], steps_b[pos]
        ea, na = entries(ws, run_a, sa, cat_a.config, cat_a.stitched.get(sa, []))
        eb, nb = entries(ws, run_b, sb, cat_b.config, cat_b.stitched.get(sb, []))
        al.notes += na + nb
        _pair_step(al, pos, sb, ea, eb, rx)
        _not_stitched(al, "A", cat_a, sa)
        _not_stitched(al, "B", cat_b, sb)
    al.pairs.sort(key=lambda p: p.order)
    return al
