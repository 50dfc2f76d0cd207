"""MoE expert load: routing from router logits, engine recorder formats, metrics, placement."""
