"""Kernel / op families by a configurable, ordered regex table (first match wins)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from studio_backend.errors import InputError

# Order matters: "fused_moe_gemm" is moe before gemm, "rotary" before "attention" patterns.
DEFAULT_FAMILIES: tuple[tuple[str, str], ...] = (
    ("communication", r"(?i)nccl|hccl|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|c10d::|gloo|\b(send|recv)\b"),
    ("moe", r"(?i)moe|expert|topk_softmax|grouped_?(gemm|matmul)|permute_?tokens|router|gating"),
    ("rotary", r"(?i)rotary|rope"),
    ("attention", r"(?i)attention|attn|flash|sdpa|softmax|paged|bmm|baddbmm"),
    ("norm", r"(?i)norm"),
    ("activation", r"(?i)silu|gelu|relu|swiglu|sigmoid|tanh|act_and_mul|silu_and_mul"),
    ("gemm", r"(?i)gemm|matmul|addmm|aten::mm\b|aten::linear|cutlass|cublas|sm\d+_xmma|ampere_|hopper_|MatMul"),
)  # fmt: skip
OTHER = "other"


def load_families(path: str | Path | None) -> list[tuple[str, str]]:
    """The family table: DEFAULT_FAMILIES, or a JSON file ``[["family", "regex"], ...]``."""
    if path is None:
        return list(DEFAULT_FAMILIES)
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(p, f"cannot read family table: {exc}") from exc
    if not isinstance(raw, list) or not all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in raw
    ):
        raise InputError(p, 'family table must be a JSON list of ["family", "regex"] pairs')
    for family, pattern in raw:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise InputError(p, f"family {family!r}: bad regex {pattern!r}: {exc}") from exc
    return [(f, r) for f, r in raw]


def classify(name: str, families: list[tuple[str, str]] | None = None) -> str:
    """The family of one name (Python twin of the SQL classification, for tests and tools)."""
    for family, pattern in families or DEFAULT_FAMILIES:
        if re.search(pattern, name):
            return family
    return OTHER


def family_sql(column: str, families: list[tuple[str, str]] | None = None) -> tuple[str, list[str]]:
    """A SQL CASE expression classifying ``column`` and its parameters (one regex each)."""
    table = families or list(DEFAULT_FAMILIES)
    whens = " ".join(f"WHEN regexp_matches({column}, ?) THEN ?" for _ in table)
    params: list[str] = []
    for family, pattern in table:
        # DuckDB (RE2) takes inline flags the same way; (?i) is understood by both.
        params += [pattern, family]
    return f"CASE {whens} ELSE '{OTHER}' END", params
