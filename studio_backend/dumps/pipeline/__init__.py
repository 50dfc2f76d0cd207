"""The ingest pipeline, one module per stage (docs/ARCHITECTURE.md, "Dump ingest stages").

discover (run id, content keys; the file lists come from the layout) -> catalog (which files
are new, each tensor's dtype and shape) -> stitch one module group (``run_stitch``, pure) ->
verify (replicas inside the stitch; partial sums against the parent here) -> statistics and
outliers (``stats_of``, pure) -> rows (the single writer's batched inserts).

The pure functions run in threads or processes on one machine (``studio_backend/dumps/ingest.py``)
or as Ray tasks on the node that holds the files (``studio_backend/dumps/cluster/``); the stage
classes here are the writer's side of each stage, mixed into ``Ingestor``.
"""
