"""A dump spread over three local Ray nodes ingests to exactly what one machine ingests.

The oracle is the one-machine ingest of the same files (itself tested against the synthetic
truth in tests/dumps) plus the truth the dump was sharded from. Each rank folder is pinned to a
node by a custom resource (conftest.py), so which shards cross nodes is known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studio_backend.dumps import synthetic as S
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.workspace import open_workspace
from tests.cluster.conftest import PINS
from tests.cluster.content import content, stitched

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _dump(root: Path, tp: int = 4, seed: int = 0) -> tuple[Path, S.Truth]:
    cfg = S.SynthConfig()
    truth = S.make_truth(cfg, [5, 2], seed=seed)
    return S.write_msit(root / f"dump{seed}", cfg, truth, tp), truth


def _node_id(lc, name: str) -> str:
    return lc.nodes[name].node_id


def _local(tmp_path: Path, session: Path):
    ws = open_workspace(tmp_path / "one")
    return ws, ingest_dump(ws, session)


def _same(ws_a, run_a, ws_b, run_b) -> None:
    a, b = content(ws_a, run_a), content(ws_b, run_b)
    for table in a:
        assert a[table] == b[table], table
    sa, sb = stitched(ws_a, run_a), stitched(ws_b, run_b)
    assert sa.keys() == sb.keys() and sa
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=str(k))


def test_three_nodes_ingest_what_one_machine_does(ray_cluster, tmp_path: Path) -> None:
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray

    session, truth = _dump(tmp_path)
    plans: list = []
    ws = open_workspace(tmp_path / "ray")
    run = ingest_dump_ray(ws, ray_cluster.address, session, plan_out=plans)
    one, run1 = _local(tmp_path, session)
    assert run == run1
    _same(ws, run, one, run1)
    plan = plans[0]
    want = {f: _node_id(ray_cluster, n) for n, fs in PINS.items() for f in fs}
    assert plan.folders == want  # each folder was read on the node it is pinned to
    # every stitch runs on the head (ranks 0 and 1); ranks 2 and 3 travel, nothing else does
    (pulled,) = ws.cursor().execute(
        "SELECT sum(nbytes) FROM dump_tensors WHERE run_id = ? AND rank IN (2, 3) AND "
        "(step, module, io, idx) IN (SELECT (step, module, io, idx) FROM dump_stitch_report "
        "WHERE run_id = ?)", [run, run]).fetchone()  # fmt: skip
    assert plan.moved.shards == pulled > 0
    # the truth the dump was sharded from (an independent oracle)
    got = stitched(ws, run)
    for (step, module, io, idx), arr in truth.items():
        if io != "_partials" and arr is not None:
            np.testing.assert_array_equal(got[(step, module, io, idx, None, None, 0)], arr)
    # where each stitched tensor lives: the node of the head's lowest rank, or the rank file's
    nodes = dict(ws.cursor().execute(
        "SELECT t.store_group IS NULL, list(DISTINCT c.folder) FROM dump_tensors t "
        "JOIN dump_cluster_tensors c USING (tensor_id) WHERE t.run_id = ? GROUP BY 1", [run]).fetchall())  # fmt: skip
    assert nodes == {False: ["npu0_4000"], True: ["npu0_4000"]}


def test_a_node_reads_its_tensor_and_tile(ray_cluster, tmp_path: Path) -> None:
    """The view's path: the node holding a tensor returns it, or only its LOD grid."""
    from studio_backend.analysis.lod import build_grid
    from studio_backend.dumps import query
    from studio_backend.dumps.cluster import where
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray

    session, _truth = _dump(tmp_path, seed=1)
    ws = open_workspace(tmp_path / "ray")
    run = ingest_dump_ray(ws, ray_cluster.address, session)
    cur = ws.cursor()
    rows = cur.execute(
        "SELECT tensor_id, store_group IS NULL, part FROM dump_tensors WHERE run_id = ? AND rank "
        "IS NULL AND module LIKE '%qkv_proj' AND io = 'output' AND step = 0", [run]).fetchall()  # fmt: skip
    rows += cur.execute(
        "SELECT tensor_id, true, part FROM dump_tensors WHERE run_id = ? AND rank IS NULL AND "
        "store_group IS NULL ORDER BY tensor_id LIMIT 3", [run]).fetchall()  # fmt: skip
    rows += cur.execute(  # a rank tensor: read where its rank folder is
        "SELECT tensor_id, true, 'rank' FROM dump_tensors WHERE run_id = ? AND rank = 3 "
        "ORDER BY tensor_id LIMIT 1", [run]).fetchall()  # fmt: skip
    kinds = {(src, part) for _t, src, part in rows}
    assert {(False, None), (False, "q"), (True, None), (True, "rank")} <= kinds
    for tid, _src, _part in rows:
        w = where.locate(ws, tid)
        assert w is not None
        here = query.load_tensor(ws, tid)
        there = where.fetch(w, ray_cluster.address)  # through a task on the holding node
        assert there.dtype == here.dtype
        np.testing.assert_array_equal(there.numpy(), here.numpy())
        kw = {"max_tokens": 3, "max_channels": 4}
        g, ref = where.fetch(w, ray_cluster.address, grid_kw=kw), build_grid(here, **kw)
        for f in ("values", "raw", "tokens", "channels", "token_axis", "channel_axis"):
            np.testing.assert_array_equal(getattr(g, f), getattr(ref, f))


def test_ranks_on_one_node_move_no_shard(ray_cluster, tmp_path: Path) -> None:
    """--node-dump: only node b holds the dump; every stitch is local to it."""
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray

    session, _truth = _dump(tmp_path, seed=2)
    plans: list = []
    ws = open_workspace(tmp_path / "ray")
    b = _node_id(ray_cluster, "b")
    run = ingest_dump_ray(ws, ray_cluster.address, None, node_dumps={b[:12]: str(session)},
                          plan_out=plans)  # fmt: skip
    assert set(plans[0].folders.values()) == {b}
    assert plans[0].moved.shards == 0 and plans[0].moved.results > 0
    one, run1 = _local(tmp_path, session)
    _same(ws, run, one, run1)


def test_a_node_killed_mid_ingest_loses_nothing(ray_cluster, tmp_path: Path) -> None:
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray
    from studio_backend.dumps.cluster.runtime import NodeLost

    session, _truth = _dump(tmp_path, seed=3)
    ws = open_workspace(tmp_path / "ray")
    killed: list[int] = []

    def kill_c(p) -> None:  # after the first catalog batch is written
        if not killed and p.files_done:
            killed.append(p.files_done)
            ray_cluster.kill("c")

    try:
        with pytest.raises(NodeLost, match="npu3_4003"):
            ingest_dump_ray(ws, ray_cluster.address, session, on_progress=kill_c)
        lost = (
            ws.cursor()
            .execute("SELECT path, message FROM dump_ingest_errors WHERE kind = 'node_lost'")
            .fetchall()
        )
        assert len(lost) == 1 and lost[0][0].endswith("/npu3_4003") and "again" in lost[0][1]
        (n,) = ws.cursor().execute("SELECT count(*) FROM dump_stitch_report").fetchone()
        assert killed and n < 52  # cut off part way (the dump has 52 tensors to stitch)
        (status,) = ws.cursor().execute("SELECT status FROM dump_runs").fetchone()
        assert status == "ingesting"
    finally:
        ray_cluster.revive("c")
    run = ingest_dump_ray(ws, ray_cluster.address, session)  # the same command, resumed
    one, run1 = _local(tmp_path, session)
    _same(ws, run, one, run1)  # nothing lost, nothing twice, no node_lost row left


def test_an_msprobe_dump_with_tool_statistics(ray_cluster, tmp_path: Path) -> None:
    """msprobe's layout (step<N>/rank<R>/) and its dump.json statistics, read on the nodes."""
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray

    cfg = S.SynthConfig()
    root = S.write_msprobe(tmp_path / "probe", cfg, S.make_truth(cfg, [4, 2], seed=9), 4)
    (root / "config.json").write_text(json.dumps(cfg.hf_config()))
    ws = open_workspace(tmp_path / "ray")
    run = ingest_dump_ray(ws, ray_cluster.address, root)
    one, run1 = _local(tmp_path, root)
    _same(ws, run, one, run1)
    (n,) = ws.cursor().execute("SELECT count(*) FROM dump_tool_stats").fetchone()
    assert n > 0


@pytest.mark.parametrize("layout", ["hook", "dumper"])
def test_an_sglang_dump(ray_cluster, tmp_path: Path, layout: str) -> None:
    """SGLang's hook folders (one per rank, spread over the nodes) and dumper records (every
    rank in one folder) from the project's SGLang fixture: the same rows as one machine."""
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray
    from tests.dumps.sglang_docs_fixture import write_dumper_dump, write_hook_dump

    write = write_hook_dump if layout == "hook" else write_dumper_dump
    fx = write(tmp_path / "sg", tp=4)
    ws, plans = open_workspace(tmp_path / "ray"), []
    run = ingest_dump_ray(ws, ray_cluster.address, fx["dump_dir"], plan_out=plans)
    # every node sees every file here (no SGLang folder is pinned): the ranks are split among
    # the nodes, so shards cross nodes for their stitches
    assert len(set(plans[0].folders.values())) == 3 and plans[0].moved.shards > 0
    one, run1 = _local(tmp_path, fx["dump_dir"])
    assert run == run1
    _same(ws, run, one, run1)
    (fmt,) = ws.cursor().execute("SELECT format FROM dump_runs").fetchone()
    assert fmt == f"sglang_{layout}"
