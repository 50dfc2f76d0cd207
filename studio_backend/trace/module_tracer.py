"""Forward-hook tracer: which modules run, in what order, with which shapes (seed 003).

Works on any ``torch.nn.Module`` (the reference engine's layers, transformers models). The same
hooks can also open a ``torch.profiler.record_function`` per module so that a profile taken
meanwhile carries the module path of every op (see ``studio_backend.trace.attribution``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from studio_backend.trace.naming import is_layer_root, layer_of


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors in an argument, looking one level into tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, torch.Tensor):
                yield item
    elif isinstance(value, dict):
        for item in value.values():
            if isinstance(item, torch.Tensor):
                yield item


def _describe(values: Iterable[Any]) -> tuple[list[list[int]], list[str]]:
    shapes: list[list[int]] = []
    dtypes: list[str] = []
    for value in values:
        for t in _tensors(value):
            shapes.append(list(t.shape))
            dtypes.append(str(t.dtype).removeprefix("torch."))
    return shapes, dtypes


@dataclass
class ModuleCall:
    """One forward call of one module."""

    seq: int
    module: str
    module_class: str
    depth: int
    parent_seq: int | None
    in_shapes: list[list[int]]
    in_dtypes: list[str]
    out_shapes: list[list[int]] = field(default_factory=list)
    out_dtypes: list[str] = field(default_factory=list)
    wall_us: float = 0.0
    rank: int | None = None

    @property
    def layer(self) -> int | None:
        return layer_of(self.module)

    @property
    def short_name(self) -> str:
        return self.module.rsplit(".", 1)[-1] if self.module else "(root)"


class ModuleTracer:
    """Records every module forward call of ``model`` while active (``with tracer:``).

    ``classes`` keeps only modules whose class name is listed (the seed's ``key_modules``);
    ``annotate`` wraps each module call in ``record_function(<module path>)`` for profiling.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        classes: Iterable[str] | None = None,
        annotate: bool = False,
        rank: int | None = None,
    ) -> None:
        self.model = model
        self.classes = set(classes) if classes else None
        self.annotate = annotate
        self.rank = rank
        self.calls: list[ModuleCall] = []
        self._stack: list[tuple[ModuleCall, float, Any]] = []
        self._handles: list[Any] = []

    def _pre(self, name: str):
        def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
            shapes, dtypes = _describe([*args, *kwargs.values()])
            parent = self._stack[-1][0].seq if self._stack else None
            call = ModuleCall(
                seq=len(self.calls),
                module=name,
                module_class=type(module).__name__,
                depth=len(self._stack),
                parent_seq=parent,
                in_shapes=shapes,
                in_dtypes=dtypes,
                rank=self.rank,
            )
            self.calls.append(call)
            annotation = None
            if self.annotate:
                annotation = torch.profiler.record_function(name or type(module).__name__)
                annotation.__enter__()
            self._stack.append((call, time.perf_counter(), annotation))

        return hook

    def _post(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._stack:  # hooks registered mid-call: nothing open to close
            return
        call, start, annotation = self._stack.pop()
        if annotation is not None:
            annotation.__exit__(None, None, None)
        call.wall_us = (time.perf_counter() - start) * 1e6
        call.out_shapes, call.out_dtypes = _describe([output])

    def __enter__(self) -> ModuleTracer:
        for name, module in self.model.named_modules():
            if self.classes is not None and type(module).__name__ not in self.classes:
                continue
            self._handles.append(
                module.register_forward_pre_hook(self._pre(name), with_kwargs=True)
            )
            self._handles.append(
                module.register_forward_hook(self._post, with_kwargs=True, always_call=True)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._stack.clear()


@contextmanager
def trace_modules(model: torch.nn.Module, **kwargs: Any) -> Iterator[ModuleTracer]:
    """``with trace_modules(model) as t: model(x)`` then read ``t.calls``."""
    tracer = ModuleTracer(model, **kwargs)
    with tracer:
        yield tracer


def counts_by_class(calls: Iterable[ModuleCall]) -> list[tuple[str, int]]:
    """Call counts per module class, most called first (ties by name)."""
    counts = Counter(c.module_class for c in calls)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def counts_by_module(calls: Iterable[ModuleCall]) -> list[tuple[str, int]]:
    """Call counts per ``Class:module.path``, most called first."""
    counts = Counter(f"{c.module_class}:{c.module}" for c in calls)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _shape_text(shapes: list[list[int]]) -> str:
    if not shapes:
        return "-"
    return ", ".join("(" + ", ".join(str(d) for d in s) + ")" for s in shapes)


def format_counts(calls: list[ModuleCall]) -> str:
    """The seed's "Module call counts" block."""
    lines = ["Module call counts:"]
    lines += [f"  • {cls}: {n}" for cls, n in counts_by_class(calls)]
    return "\n".join(lines)


def format_layer(calls: list[ModuleCall], layer: int = 0) -> str:
    """The seed's "Call order of the first Transformer layer" block (sub-modules of the layer)."""
    rows = [c for c in calls if c.layer == layer and not is_layer_root(c.module)]
    lines = [f"Call order of Transformer layer {layer}:"]
    for i, c in enumerate(rows, 1):
        lines.append(f"{i:2d}. [{c.module_class}] {c.short_name}")
        lines.append(f"     Input:  {_shape_text(c.in_shapes)}")
        lines.append(f"     Output: {_shape_text(c.out_shapes)}")
    return "\n".join(lines)


def calls_to_rows(calls: Iterable[ModuleCall]) -> list[dict[str, Any]]:
    """Rows for the ``trace_calls`` table (shapes as JSON text)."""
    return [
        {
            "seq": c.seq,
            "module": c.module,
            "module_class": c.module_class,
            "layer": c.layer,
            "depth": c.depth,
            "parent_seq": c.parent_seq,
            "rank": c.rank,
            "in_shapes": json.dumps(c.in_shapes),
            "in_dtypes": json.dumps(c.in_dtypes),
            "out_shapes": json.dumps(c.out_shapes),
            "out_dtypes": json.dumps(c.out_dtypes),
            "wall_us": c.wall_us,
        }
        for c in calls
    ]
