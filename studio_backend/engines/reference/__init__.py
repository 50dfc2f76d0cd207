"""A tensor-parallel Qwen3-MoE whose module classes and paths match vLLM's exactly."""
