"""Qwen3-MoE ``config.json`` reading: both key spellings and the MoE layer rule.

Hub checkpoints say ``num_experts`` and ``rope_theta``; configs saved by transformers 5 say
``num_local_experts`` and ``rope_parameters: {rope_theta, rope_type}``. Both are accepted.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio_backend.errors import InputError

REQUIRED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
)


@dataclass(frozen=True)
class Qwen3MoeConfig:
    """The fields of a Qwen3-MoE config that the engine and the analyses use."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    moe_intermediate_size: int
    num_experts: int
    num_experts_per_tok: int
    norm_topk_prob: bool
    decoder_sparse_step: int
    mlp_only_layers: tuple[int, ...] = field(default_factory=tuple)
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    eos_token_id: int | None = None
    bos_token_id: int | None = None
    dtype: str = "float32"

    def is_moe_layer(self, layer: int) -> bool:
        """vLLM's / transformers' rule (seed 001): MoE iff not in mlp_only_layers, experts exist
        and ``(layer + 1) % decoder_sparse_step == 0``."""
        return (
            layer not in self.mlp_only_layers
            and self.num_experts > 0
            and (layer + 1) % self.decoder_sparse_step == 0
        )

    @property
    def moe_layers(self) -> list[int]:
        return [i for i in range(self.num_hidden_layers) if self.is_moe_layer(i)]

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mlp_only_layers"] = list(self.mlp_only_layers)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> Qwen3MoeConfig:
        """Read a config dict in either spelling; ``source`` names it in errors."""
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise InputError(source, f"not a Qwen3-MoE config: missing {', '.join(missing)}")
        num_experts = raw.get("num_experts", raw.get("num_local_experts", 0)) or 0
        rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
        rope_theta = raw.get("rope_theta", rope.get("rope_theta", 1_000_000.0))
        heads = int(raw["num_attention_heads"])
        head_dim = int(raw.get("head_dim") or raw["hidden_size"] // heads)
        eos = raw.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        dtype = str(raw.get("dtype") or raw.get("torch_dtype") or "float32")
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(raw["num_key_value_heads"]),
            head_dim=head_dim,
            intermediate_size=int(raw.get("intermediate_size", 0)),
            moe_intermediate_size=int(raw.get("moe_intermediate_size", 0)),
            num_experts=int(num_experts),
            num_experts_per_tok=int(raw.get("num_experts_per_tok", 1)),
            norm_topk_prob=bool(raw.get("norm_topk_prob", False)),
            decoder_sparse_step=int(raw.get("decoder_sparse_step", 1) or 1),
            mlp_only_layers=tuple(int(i) for i in raw.get("mlp_only_layers") or ()),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            eos_token_id=None if eos is None else int(eos),
            bos_token_id=raw.get("bos_token_id"),
            dtype=dtype.replace("torch.", ""),
        )


def read_config(model_dir: str | Path) -> Qwen3MoeConfig:
    """Read ``<model_dir>/config.json`` (or a config.json path)."""
    path = Path(model_dir)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise InputError(path, "config.json not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable JSON ({exc})") from exc
    if not isinstance(raw, dict):
        raise InputError(path, "expected a JSON object")
    return Qwen3MoeConfig.from_dict(raw, source=str(path))
