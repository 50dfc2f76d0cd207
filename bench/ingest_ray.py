"""Ingest over a local Ray cluster: bytes moved between nodes and throughput, 1-3 nodes.

    python bench/ingest_ray.py                         # 0.64 GB dump, 1, 2 and 3 nodes
    python bench/ingest_ray.py --layers 7              # the 2.24 GB dump of bench/ingest.py

The dump is bench/ingest.py's Qwen3-30B-A3B-shaped msit dump (tp=4, bf16). Each node gets its
own dump folder holding only its rank folders (hard links: no extra disk), as on a real cluster
where every machine writes its own ranks; nodes find their part with --node-dump.
Cases (each against a local ingest of the same dump in the same run, interleaved):
  spread N: the 4 ranks round-robin over N nodes (N = 1, 2, 3): shards of a tensor travel to
            the node that stitches it;
  colocated: all 4 ranks on one worker node, the writer on the head: only rows, statistics
            and outlier lists travel (plus the dtype/shape stand-ins of stitched tensors).
Bytes moved are payload bytes counted by the studio (pickled results, tensor bytes of pulled
shards), not NIC counters. One LOD tile's size is measured separately: a view moves it only
when it asks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, before ray
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from bench.ingest import make_dump  # noqa: E402
from studio_backend.dumps.cluster.ingest import ingest_dump_ray  # noqa: E402
from studio_backend.dumps.ingest import ingest_dump  # noqa: E402
from studio_backend.workspace import open_workspace  # noqa: E402


def split_dump(session: Path, dest: Path, parts: list[list[str]]) -> list[Path]:
    """One session copy per node (hard links), each with only its rank folders."""
    out = []
    for i, folders in enumerate(parts):
        d = dest / f"node{i}" / session.name
        shutil.rmtree(d.parent, ignore_errors=True)
        shutil.copytree(session, d, copy_function=os.link,
                        ignore=lambda p, names, keep=set(folders): [
                            n for n in names if Path(p).name == "torch_tensors" and n not in keep])  # fmt: skip
        out.append(d)
    return out


def run_local(session: Path, tmp: Path) -> float:
    shutil.rmtree(tmp / "ws-local", ignore_errors=True)
    ws = open_workspace(tmp / "ws-local")
    t0 = time.perf_counter()
    ingest_dump(ws, session)
    dt = time.perf_counter() - t0
    ws.close()
    return dt


def run_ray(address: str, node_dirs: dict[str, Path], tmp: Path, tag: str) -> tuple[float, object]:
    shutil.rmtree(tmp / f"ws-{tag}", ignore_errors=True)
    for d in node_dirs.values():
        shutil.rmtree(d.parent / f"{d.name}.studio-tensors", ignore_errors=True)
    ws = open_workspace(tmp / f"ws-{tag}")
    plans: list = []
    t0 = time.perf_counter()
    ingest_dump_ray(ws, address, None, node_dumps={k: str(v) for k, v in node_dirs.items()},
                    plan_out=plans)  # fmt: skip
    dt = time.perf_counter() - t0
    tile = _tile_bytes(ws, address)
    ws.close()
    return dt, (plans[0].moved, tile)


def _tile_bytes(ws, address: str) -> int:  # noqa: ANN001
    """Bytes of one 400 x 800 LOD grid of the largest stitched tensor, as a view asks its node
    for it (``views.run`` -> ``where.compute``; Ray's size of the returned object)."""
    from studio_backend.analysis.views import Recipe
    from studio_backend.dumps.cluster import where

    (tid,) = ws.cursor().execute(
        "SELECT tensor_id FROM dump_tensors WHERE rank IS NULL AND part IS NULL "
        "ORDER BY nbytes DESC LIMIT 1").fetchone()  # fmt: skip
    w = where.locate(ws, tid)
    where.compute(ws, "grid", [tid], [w], [Recipe(1)], {}, address)
    return where.MOVED["last"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--decode", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--store-mb", type=int, default=256, help="object store per node (MB)")
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench-ingest-ray-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cluster = None
    try:
        session, size = make_dump(tmp / "dump", args.layers, args.tokens, args.decode, 4)
        folders = sorted(p.name for p in (session / "torch_tensors").iterdir() if p.is_dir())
        print(f"dump: {size / 1e9:.2f} GB, 4 ranks ({', '.join(folders)}), load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
        node = {"num_cpus": 2, "object_store_memory": args.store_mb << 20}
        cluster = Cluster(initialize_head=True, head_node_args=node)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        ids = [cluster.head_node.node_id]
        rows = []
        for n in (1, 2, 3):
            while len(ids) < n:
                ids.append(cluster.add_node(**node).node_id)
            cluster.wait_for_nodes()
            cases = {f"spread {n}": [[f for i, f in enumerate(folders) if i % n == k]
                                     for k in range(n)]}  # fmt: skip
            if n == 3:
                cases["colocated"] = [[], [], folders]
            for name, parts in cases.items():
                dirs = split_dump(session, tmp / "nodes" / name.replace(" ", ""), parts)
                node_dirs = {ids[k][:16]: dirs[k] for k in range(n) if parts[k]}
                loc, rem, moved = [], [], None
                for _ in range(args.repeats):
                    loc.append(run_local(session, tmp))
                    dt, moved = run_ray(cluster.address, node_dirs, tmp, name.replace(" ", ""))
                    rem.append(dt)
                m, tile = moved
                row = (name, statistics.median(loc), statistics.median(rem), m, tile)
                rows.append(row)
                print(f"{name:>10}: local {row[1]:.2f} s ({size / 1e6 / row[1]:.0f} MB/s), ray "
                      f"{row[2]:.2f} s ({size / 1e6 / row[2]:.0f} MB/s, {row[1] / row[2] * 100:.0f} % "
                      f"of local); moved shards {m.shards / 1e6:.1f} MB + results "
                      f"{m.results / 1e6:.2f} MB = {m.total / size * 100:.2f} % of the dump; one "
                      f"tile {tile / 1e3:.0f} kB; repeats local {loc} ray {rem}; load "
                      f"{os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
