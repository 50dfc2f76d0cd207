"""Inference engines the studio can run itself (the CPU reference engine)."""
