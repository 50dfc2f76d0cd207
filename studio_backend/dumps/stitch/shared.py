"""Shared modules in a dump: one object under several names, or one name called by many layers.

msit and msprobe hook a module OBJECT and name its files after one of its paths, so a module
registered twice (vLLM 0.32's ``GateLinear`` as ``mlp.gate`` and ``mlp.experts.gate``) is
dumped under one name only, and a module called by every layer (vLLM's ``rotary_emb`` cache)
keeps only its last call of the step. Neither is wrong data, but both mislead a reader who takes
the name at face value: such modules are flagged, with the evidence (REFERENCE.md 2b).

Pure functions of the catalogue rows; tensors are read through ``load`` (rank 0's copies).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from studio_backend.dumps.stitch.rules import IN_PLACE, KNOWN_ALIASES
from studio_backend.dumps.stitch.stitcher import bitwise_equal


@dataclass(frozen=True)
class Row:
    """One lowest-rank tensor of the catalogue."""

    step: int
    module: str
    io: str
    idx: int
    source_file: str


@dataclass(frozen=True)
class SharedFlag:
    module: str
    kind: str  # 'shared_by_layers' | 'alias' | 'in_place'
    also: str  # the other names / layers involved
    evidence: str  # 'names' | 'model_tree' | 'data', joined with '+'
    detail: str


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")


def kind_of(module: str) -> tuple[int | None, str]:
    """(layer, path below it): 'model.layers.3.self_attn.qkv_proj' -> (3, 'self_attn.qkv_proj')."""
    m = _LAYER.search(module)
    if m is None:
        return None, module
    return int(m.group(1)), module[m.end() :]


def _prefix(module: str) -> str:
    """'model.layers.3.mlp.gate' -> 'model.layers.3.'"""
    m = _LAYER.search(module)
    return module[: m.end()] if m else ""


def shared_by_layers(
    modules: Iterable[str], tree: dict[str, str], calls: dict[str, int] | None = None
) -> list[SharedFlag]:
    """A per-layer module kind dumped in one layer only while a sibling kind is dumped in many.

    That is one object called by every layer. msit overwrites its files at each call (the last
    call survives); msprobe numbers the calls (``calls``: module -> calls per step).
    """
    calls = calls or {}
    layers: dict[str, set[int]] = defaultdict(set)
    names: dict[str, str] = {}
    for m in modules:
        layer, kind = kind_of(m)
        if layer is not None and "." in kind:
            layers[kind].add(layer)
            names[kind] = m
    out = []
    for kind, where in layers.items():
        if len(where) != 1:
            continue
        parent = kind.rsplit(".", 1)[0]
        siblings = [
            ls
            for k, ls in layers.items()
            if k != kind and k.rsplit(".", 1)[0] == parent and len(ls) > 1 and where <= ls
        ]
        if not siblings:
            continue
        (layer,) = where
        called = max(siblings, key=len)
        in_tree = [m for m in tree if kind_of(m)[1] == kind and kind_of(m)[0] != layer]
        evidence = "names+model_tree" if in_tree else "names"
        n = calls.get(names[kind], 1)
        what = (
            f"its {n} calls per step are kept as calls 0..{n - 1} (in layer order), all under "
            f"layer {layer}'s name"
            if n > 1
            else "its files hold the LAST call of each step (each call overwrote the previous), "
            f"not layer {layer}'s own call unless that layer called it last"
        )
        out.append(SharedFlag(
            names[kind], "shared_by_layers", ",".join(map(str, sorted(called))), evidence,
            f"{kind} is dumped under layer {layer} only while its siblings are dumped in "
            f"{len(called)} layers: one object called by every layer, named after one path; "
            + what,
        ))  # fmt: skip
    return out


def aliases(
    rows: list[Row], tree: dict[str, str], load: Callable[[str], torch.Tensor]
) -> list[SharedFlag]:
    """One object under two names in a layer: both dumped with equal data, or one missing."""
    by_module: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_module[r.module].append(r)
    out: list[SharedFlag] = []
    seen: set[tuple[str, str]] = set()
    for m in sorted(by_module):
        layer, kind = kind_of(m)
        if layer is None:
            continue
        pre = _prefix(m)
        last = kind.rsplit(".", 1)[-1]
        # the alias table, then any same-named module of the same layer in the dump or the tree
        cands = [pre + a for k, a, _cls, _need in KNOWN_ALIASES if k == kind]
        cands += [
            o for o in (*by_module, *tree)
            if o != m and o.startswith(pre) and o.rsplit(".", 1)[-1] == last
        ]  # fmt: skip
        for other in dict.fromkeys(cands):
            pair = (min(m, other), max(m, other))
            if pair in seen:
                continue
            seen.add(pair)
            if other in by_module:
                if _same_data(by_module[m], by_module[other], load):
                    for a, b in (pair, pair[::-1]):
                        out.append(SharedFlag(a, "alias", b, "data",
                                              f"every dumped tensor equals {b}'s: one object "
                                              "registered under both names"))  # fmt: skip
                continue
            same_class = tree.get(other) is not None and tree.get(other) == tree.get(m)
            known = next(
                (c for k, a, c, need in KNOWN_ALIASES
                 if (k, a) == (kind, other[len(pre) :]) and (not need or tree.get(m) == c)),
                None,
            )  # fmt: skip
            if same_class or known:
                evidence = (
                    "model_tree" if same_class else ("names+class" if tree.get(m) else "names")
                )
                cls = tree.get(m) or known or "the module"
                out.append(SharedFlag(m, "alias", other, evidence,
                                      f"{cls} registered as both {other[len(pre):]} and {kind}; "
                                      f"it is dumped once, as {kind} (hooks fire once per object)"))  # fmt: skip
    return out


def _same_data(a: list[Row], b: list[Row], load: Callable[[str], torch.Tensor]) -> bool:
    key = {(r.step, r.io, r.idx): r.source_file for r in b}
    common = [
        (r.source_file, key[(r.step, r.io, r.idx)]) for r in a if (r.step, r.io, r.idx) in key
    ]
    if not common or not any(True for r in a if r.io == "output"):
        return False
    return all(bitwise_equal(load(x), load(y)) for x, y in common)


def in_place(rows: list[Row], load: Callable[[str], torch.Tensor]) -> list[SharedFlag]:
    """Modules that modify their inputs in place (rotary_emb): the dumped inputs ARE outputs."""
    by_module: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if any(p.search(r.module) for p, _pairs in IN_PLACE):
            by_module[r.module].append(r)
    out = []
    for m, rs in sorted(by_module.items()):
        pairs = next(pairs for p, pairs in IN_PLACE if p.search(m))
        files = {(r.step, r.io, r.idx): r.source_file for r in rs}
        equal, checked = True, 0
        for step in sorted({r.step for r in rs}):
            for i, o in pairs:
                x, y = files.get((step, "input", i)), files.get((step, "output", o))
                if x is None or y is None:
                    continue
                checked += 1
                equal = equal and bitwise_equal(load(x), load(y))
        if checked and equal:
            out.append(SharedFlag(m, "in_place", "", "data",
                                  "rotates its inputs in place: the dumped inputs equal the "
                                  "outputs (msit saves them after the forward), not the values "
                                  "before the call"))  # fmt: skip
    return out


def detect(
    rows: list[Row],
    tree: dict[str, str],
    load: Callable[[str], torch.Tensor],
    calls: dict[str, int] | None = None,
) -> list[SharedFlag]:
    """Every flag for one run's lowest-rank tensors, its module classes (model tree, msprobe
    names) and the number of calls per step of each module."""
    modules = sorted({r.module for r in rows})
    return shared_by_layers(modules, tree, calls) + aliases(rows, tree, load) + in_place(rows, load)
