"""Synthetic Qwen3-MoE model presets (no torch: the CLI lists them without importing it)."""

from __future__ import annotations

from typing import Any

# Presets. tiny: fast CPU tests (num_kv_heads=2 so tp=4 replicates KV heads; layer 0 dense via
# mlp_only_layers, MoE elsewhere). tiny-d32, tiny-d32-kv2: the same shape with head_dim 32, which
# real vLLM serves on CPU (docs/ENGINE.md). small: step 2 sparsity, dense and MoE alternate.
# wide: Qwen3-30B-A3B widths with few layers, for benchmarks.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [0],
        "max_position_embeddings": 2048,
        "dtype": "float32",
    },
    "small": {
        "vocab_size": 1024,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 128,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [],
        "max_position_embeddings": 4096,
        "dtype": "float32",
    },
    # Servable by real vLLM on CPU (its attention needs head_dim >= 32): 4 KV heads, so TP=4
    # holds one KV head per rank.
    "tiny-d32": {
        "vocab_size": 512,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "head_dim": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 64,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [0],
        "max_position_embeddings": 2048,
        "dtype": "float32",
    },
    # As tiny-d32 with 2 KV heads: TP=4 replicates each KV head on two ranks.
    "tiny-d32-kv2": {
        "vocab_size": 512,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 64,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [0],
        "max_position_embeddings": 2048,
        "dtype": "float32",
    },
    "wide": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 2,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 768,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "max_position_embeddings": 8192,
        "dtype": "bfloat16",
    },
}
