"""The token axis of a dumped tensor: which leading dims index tokens, which are channels.

vLLM and SGLang hold activations as ``[tokens, hidden]``; Hugging Face models dumped by msit or
msprobe as ``[batch, seq, hidden]``; q_norm/k_norm as ``[tokens, heads, head_dim]`` (vLLM) or
``[batch, seq, heads, head_dim]`` (Hugging Face). One integer says it all: ``token_dims``, the
number of leading dims flattened into tokens (the rest are flattened into channels).

The decision is a rule table (first match wins) over the tensor (shape, dtype, module, io) and
the run (format, batch-first evidence, config.json head counts). Users override it per module
regex (``studio token-axis``, the Activations page); overrides win over every rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from studio_backend.errors import InputError

# Formats whose writers never add a batch dim (the engines' own flattened token layout).
FLAT_FORMATS = frozenset({"sglang_hook", "sglang_dumper"})  # studio_backend/dumps/detect.py names
_HEAD_NORM = re.compile(r"(?:^|\.)(q_norm|k_norm)$")
_IDS = re.compile(r"(input_ids|position_ids|positions|embed_tokens)")
_DECODER = re.compile(r"(?:^|\.)layers\.\d+$")
_LAYER_NORM = re.compile(r"(?:^|\.)(input_layernorm|post_attention_layernorm|norm)$")
EVIDENCE_SQL = (  # the rows batch_evidence looks at
    "(module LIKE '%embed_tokens' OR arg_name = 'input_ids' OR regexp_matches(module, "
    "'(^|\\.)(layers\\.\\d+|input_layernorm|post_attention_layernorm|norm)$'))"
)
_TOP = frozenset({"root", "model", ""})  # the top module: a causal LM's first input is its ids


@dataclass(frozen=True)
class Axis:
    """How a tensor is viewed as ``[tokens, channels]``."""

    token_dims: int
    layout: str
    source: str  # 'format' | 'module' | 'config' | 'shape' | 'override'
    reason: str = ""

    def matrix_shape(self, shape: tuple[int, ...] | list[int]) -> tuple[int, int]:
        return matrix_shape(shape, self.token_dims)


@dataclass(frozen=True)
class TensorFacts:
    """What the rules look at for one tensor."""

    shape: tuple[int, ...]
    integer: bool
    module: str
    io: str = "output"
    arg_name: str | None = None


@dataclass(frozen=True)
class RunFacts:
    """What the rules look at for the whole run."""

    format: str = "msit"
    batched: bool | None = None  # None: no evidence either way
    batched_reason: str = ""
    heads: frozenset[tuple[int, int]] = field(default_factory=frozenset)  # (heads, head_dim)
    hidden: int | None = None

    @staticmethod
    def from_config(
        fmt: str, config: dict[str, Any] | None, batched: bool | None, why: str
    ) -> RunFacts:
        cfg = config or {}
        cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
        hidden = cfg.get("hidden_size") if isinstance(cfg.get("hidden_size"), int) else None
        return RunFacts(fmt, batched, why, head_shapes(config), hidden)


def head_shapes(config: dict[str, Any] | None) -> frozenset[tuple[int, int]]:
    """``{(num_attention_heads, head_dim), (num_key_value_heads, head_dim)}`` from config.json."""
    cfg = config or {}
    cfg = cfg.get("text_config", cfg) if isinstance(cfg.get("text_config"), dict) else cfg
    h, kv = cfg.get("num_attention_heads"), cfg.get("num_key_value_heads")
    d = cfg.get("head_dim")
    if d is None and isinstance(h, int) and h and isinstance(cfg.get("hidden_size"), int):
        d = cfg["hidden_size"] // h
    return frozenset((int(n), int(d)) for n in (h, kv) if isinstance(n, int) and isinstance(d, int))


def matrix_shape(shape: tuple[int, ...] | list[int], token_dims: int) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    return math.prod(shape[:token_dims]), math.prod(shape[token_dims:])


def to_matrix(t: torch.Tensor, token_dims: int) -> torch.Tensor:
    """``t`` as ``[tokens, channels]``: the first ``token_dims`` dims are tokens."""
    if not 0 <= token_dims <= t.dim():
        raise InputError(
            f"token axis {token_dims}",
            f"must be 0..{t.dim()} for a tensor of shape {list(t.shape)}",
        )
    return t.reshape(*matrix_shape(t.shape, token_dims))


def describe(
    shape: tuple[int, ...] | list[int],
    token_dims: int,
    heads: bool = False,
    hidden: int | None = None,
) -> str:
    """A layout name: ``[batch, seq, hidden]``, ``[tokens, heads, head_dim]``, ..."""
    n = len(shape)
    one = "hidden" if hidden is None or (n and int(shape[-1]) == hidden) else "channels"
    tok = {0: [], 1: ["tokens"], 2: ["batch", "seq"]}.get(token_dims)
    if tok is None:
        tok = [f"t{i}" for i in range(token_dims)]
    rest = n - token_dims
    ch = {0: [], 1: [one], 2: ["heads", "head_dim"] if heads else ["c0", "c1"]}.get(rest)
    if ch is None:
        ch = [f"c{i}" for i in range(rest)]
    if token_dims == 0:
        return f"[{', '.join(ch or ['value'])}] (one token)"
    return "[" + ", ".join(tok + ch) + "]"


# -- the rule table ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    name: str
    source: str
    applies: Callable[[TensorFacts, RunFacts], bool]
    token_dims: Callable[[TensorFacts, RunFacts], int]
    heads: bool
    why: str


def _nd(t: TensorFacts) -> int:
    return len(t.shape)


RULES: tuple[Rule, ...] = (
    Rule("scalar", "shape", lambda t, r: _nd(t) == 0, lambda t, r: 0, False, "a scalar"),
    Rule("index_1d", "shape", lambda t, r: t.integer and _nd(t) == 1, lambda t, r: 1, False,
         "integer ids / positions, one per token"),
    Rule("index_2d", "module",
         lambda t, r: t.integer and _nd(t) == 2 and r.batched is not False
         and (bool(_IDS.search(f"{t.module}.{t.arg_name or ''}"))
              or (t.io == "input" and t.module in _TOP)),
         lambda t, r: 2, False, "token ids / positions of a batch-first model: [batch, seq]"),
    Rule("head_norm", "module", lambda t, r: _nd(t) >= 3 and bool(_HEAD_NORM.search(t.module)),
         lambda t, r: _nd(t) - 2, True, "q_norm / k_norm normalise per head: the last two dims "
         "are heads and head_dim"),
    Rule("config_heads", "config",
         lambda t, r: _nd(t) >= (4 if r.batched else 3) and tuple(t.shape[-2:]) in r.heads,
         lambda t, r: _nd(t) - 2, True, "the last two dims are (heads, head_dim) of config.json"),
    Rule("flat_format", "format", lambda t, r: _nd(t) >= 2 and r.format in FLAT_FORMATS,
         lambda t, r: 1, False, "this engine's dumps hold tokens flattened on dim 0"),
    Rule("batch_first", "format", lambda t, r: _nd(t) >= 3 and r.batched is not False,
         lambda t, r: 2, False, "a batch-first (Hugging Face) model: [batch, seq, ...]"),
    Rule("tokens_first", "format", lambda t, r: _nd(t) >= 2, lambda t, r: 1, False,
         "tokens on dim 0 (vLLM layout)"),
    Rule("vector", "shape", lambda t, r: _nd(t) == 1, lambda t, r: 0, False,
         "a 1-D float tensor: one row of values"),
)  # fmt: skip


def decide(t: TensorFacts, run: RunFacts) -> Axis:
    """The token axis of one tensor by the first matching rule."""
    for rule in RULES:
        if rule.applies(t, run):
            k = rule.token_dims(t, run)
            why = rule.why
            if rule.name in ("batch_first", "tokens_first") and run.batched_reason:
                why = f"{why}; {run.batched_reason}"
            return Axis(k, describe(t.shape, k, rule.heads, run.hidden), rule.source, why)
    raise AssertionError("the rule table ends with a catch-all")  # pragma: no cover


def overridden(shape: tuple[int, ...], token_dims: int, regex: str, module: str = "") -> Axis:
    heads = len(shape) - token_dims == 2 and bool(_HEAD_NORM.search(module))
    return Axis(
        token_dims, describe(shape, token_dims, heads), "override", f"set by the user for /{regex}/"
    )


def batch_evidence(
    rows: list[tuple[str, str, int, str | None, list[int]]],
) -> tuple[bool | None, str]:
    """Is the run batch-first? From (module, io, idx, arg_name, shape) of its tensors.

    The embedding's token ids (``[batch, seq]`` vs ``[tokens]``) decide; failing that the
    hidden states (3-D vs 2-D) of the decoder layers, then of the layer norms.
    """
    for module, io, _idx, arg, shape in rows:
        if io == "input" and (module.endswith("embed_tokens") or (arg or "") == "input_ids"):
            if len(shape) in (1, 2):
                b = len(shape) == 2
                return b, f"{module} input ids are {list(shape)}"
    for pattern in (_DECODER, _LAYER_NORM):
        for module, io, _idx, _arg, shape in rows:
            if pattern.search(module) and io == "output" and len(shape) in (2, 3):
                b = len(shape) == 3
                return b, f"{module} output is {list(shape)}"
    return None, ""
