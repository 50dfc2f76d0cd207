"""Synthetic Qwen3-MoE model presets (no torch: the CLI lists them without importing it)."""

from __future__ import annotations

from typing import Any

# Presets. tiny: fast CPU tests (num_kv_heads=2 so tp=4 replicates KV heads; layer 0 dense via
# mlp_only_layers, MoE elsewhere). small: step 2 sparsity, dense and MoE alternate. tiny-d32:
# servable by real vLLM on CPU (its attention needs head_dim >= 32, docs/ENGINE.md), 4 KV heads
# so TP=4 holds one KV head per rank; tiny-d32-kv2: the same with 2 KV heads, TP=4 replicates
# each on two ranks. wide: Qwen3-30B-A3B widths with few layers, for benchmarks.
# Columns: _FIELDS in order (L layers, H attention heads, E experts, k experts per token,
# st decoder_sparse_step, mlp dense mlp_only_layers, pos max_position_embeddings).
_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "num_experts", "num_experts_per_tok",
    "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers", "max_position_embeddings",
    "dtype",
)  # fmt: skip
# fmt: off
_ROWS: dict[str, tuple[Any, ...]] = {
    #                  vocab   hid   inter L  H   kv hd   E    k  moe  st mlp  pos   dtype
    "tiny":         (512,    64,   128,  3, 4,  2, 16,  8,   2, 32,  1, [0], 2048, "float32"),
    "small":        (1024,   256,  512,  6, 8,  4, 32,  16,  4, 128, 2, [],  4096, "float32"),
    "tiny-d32":     (512,    128,  256,  3, 4,  4, 32,  8,   2, 64,  1, [0], 2048, "float32"),
    "tiny-d32-kv2": (512,    128,  256,  3, 4,  2, 32,  8,   2, 64,  1, [0], 2048, "float32"),
    "wide":         (151936, 2048, 6144, 2, 32, 4, 128, 128, 8, 768, 1, [],  8192, "bfloat16"),
}
# fmt: on
PRESETS: dict[str, dict[str, Any]] = {
    name: dict(zip(_FIELDS, row, strict=True)) for name, row in _ROWS.items()
}
