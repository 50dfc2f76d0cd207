"""Make a run's stitched tensors independent of the dump folder.

A stitched tensor proven identical on all ranks is not copied at ingest: its row points at rank
0's file. Before the dump is moved or deleted, ``pack_run`` copies those tensors into the
workspace's safetensors store and repoints their rows, so every stitched tensor (and its
statistics) stays viewable. Rank tensors still live in the dump files.
"""

from __future__ import annotations

from studio_backend.dumps.formats.common import load_source, source_path
from studio_backend.errors import StudioError
from studio_backend.workspace import Workspace


def pack_run(ws: Workspace, run_id: str) -> tuple[int, int]:
    """Copy the run's referenced stitched tensors into the store; (tensors, bytes) copied."""
    rows = (
        ws.cursor()
        .execute(
            "SELECT tensor_id, step, module, io, idx, arg_name, call_index, source_file "
            "FROM dump_tensors WHERE run_id = ? AND rank IS NULL AND store_group IS NULL "
            "AND source_file IS NOT NULL ORDER BY tensor_id",
            [run_id],
        )
        .fetchall()
    )
    from studio_backend.dumps.ingest import stitched_group

    moved, nbytes = [], 0
    for tid, step, module, io, idx, arg, call, source in rows:
        if not source_path(source).is_file():
            raise StudioError(
                f"{source}: this run's tensor {tid} was read from that file, which is gone; "
                "pack a run before moving or deleting its dump"
            )
        t = load_source(source)
        group = stitched_group(run_id, step, module, io, idx, arg, call)
        ws.tensors.put(group, {"tensor": t}, metadata={"rule": "replicated", "packed": "1"})
        moved.append((group, tid))
        nbytes += t.numel() * t.element_size()
    if moved:
        with ws.transaction() as cur:
            cur.executemany(
                "UPDATE dump_tensors SET store_group = ?, store_name = 'tensor', "
                "source_file = NULL WHERE tensor_id = ?",
                moved,
            )
    return len(moved), nbytes
