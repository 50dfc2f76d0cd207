"""DeepSeek sparse attention (DSA): top-k tracer, trace ingest and block-reuse analyses.

The trace format is seed 004's ``trace_steps.jsonl`` / ``summary.json`` (see ``schema``).
Nothing here imports torch except ``indexer`` (the lightning indexer itself).
"""
