"""Activation dumps: readers (msit_llm, msprobe), ingest into the workspace, stitching, stats."""
