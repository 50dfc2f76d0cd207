"""Model checkpoints: Qwen3-MoE config reading, synthetic checkpoint creation, tokenizer."""
