"""Views of a tensor that lies on another Ray node: computed there, only the result travels.

On this one-machine cluster every node sees every file, so ``STUDIO_RAY_VIEWS=node`` makes the
views ask the node as they would on a real cluster (where the file is not here). The oracle is
the one-machine ingest of the same dump read here with numpy/torch (``lod.build_grid``,
``outliers``), values compared exactly; the bytes are Ray's own size of each result object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from studio_backend.analysis import compare, lod, outliers, source, views
from studio_backend.analysis.source import Selected
from studio_backend.analysis.views import Recipe
from studio_backend.dumps import synthetic as S
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

FIELDS = ("values", "raw", "tokens", "channels", "token_axis", "channel_axis")


def _same_grid(g, ref) -> None:
    for f in FIELDS:
        a, b = getattr(g, f), getattr(ref, f)
        assert a.dtype == b.dtype, f
        np.testing.assert_array_equal(a, b, err_msg=f)
    assert (g.pooled, g.source_shape) == (ref.pooled, ref.source_shape)


@pytest.fixture
def on_node(ray_cluster, monkeypatch):
    """Views ask the node; a whole-tensor download (``where.load``) fails the test."""
    from studio_backend.dumps.cluster import where

    monkeypatch.setenv(where.VIEWS_ENV, "node")
    monkeypatch.setenv("STUDIO_RAY_ADDRESS", ray_cluster.address)

    def no_download(*_a, **_k):
        raise AssertionError("a view downloaded a whole remote tensor")

    monkeypatch.setattr(where, "load", no_download)
    return where


def _ingest_both(ray_cluster, tmp_path: Path, ws_dir: Path | None = None):
    from studio_backend.dumps.cluster.ingest import ingest_dump_ray

    cfg = S.SynthConfig()
    session = S.write_msit(tmp_path / "dump", cfg, S.make_truth(cfg, [6, 3], seed=11), 4)
    ws = open_workspace(ws_dir or tmp_path / "ray")
    run = ingest_dump_ray(ws, ray_cluster.address, session)
    one = open_workspace(tmp_path / "one")
    run1 = ingest_dump(one, session)
    assert run == run1
    return ws, one, run


def _selections(ws, run: str) -> list[Selected]:
    rows = source.tensors(ws, run, step=0)
    rows = rows[~rows["dtype"].astype(str).str.contains("int")]
    return [Selected(run, int(r.step), r.module, r.io, int(r.idx),
                     r.part if isinstance(r.part, str) else None)
            for r in rows.itertuples()]  # fmt: skip


def test_remote_views_equal_the_local_ingest(ray_cluster, on_node, tmp_path: Path) -> None:
    ws, one, run = _ingest_both(ray_cluster, tmp_path)
    sels = _selections(ws, run)
    assert len(sels) > 10 and any(s.part for s in sels)
    kw = {"max_tokens": 2, "max_channels": 3}  # pooled: 6 tokens, 4..32 channels
    for sel in sels:
        assert source.is_remote(ws, sel) and not source.is_remote(one, sel)
        x = source.matrix(one, sel)  # the local ingest's tensor, here
        rec = [source.recipe(ws, sel)[1]]
        _same_grid(source.view(ws, "grid", [sel], rec, **kw), lod.build_grid(x, **kw))
        assert source.view(ws, "summary", [sel], rec, t0=1, t1=5) == outliers.summarize(x[1:5])
        top = source.view(ws, "top_k", [sel], rec, k=5, t0=2, t1=6)
        want = outliers.top_k(x[2:6], 5)
        want["token"] += 2
        assert top.equals(want), sel.label
    # a part split on the node from the whole fused tensor (not stored as a part)
    qkv = next(s for s in sels if s.part == "k")
    whole = next(s for s in sels if s.module == qkv.module and s.io == qkv.io and s.part is None)
    tid, _ = source.recipe(ws, whole)
    cfg = source.run_config(ws, run)
    rec = Recipe(1, qkv.module, "k", json.dumps(cfg, sort_keys=True))
    got = views.run(ws, "grid", [tid], [rec], **kw)
    _same_grid(got, lod.build_grid(source.matrix(one, qkv), **kw))

    # two tensors on two nodes: B is read on its node and sent to A's, not here
    def file_of(s: Selected) -> str:
        return str(on_node.locate(ws, source.recipe(ws, s)[0]).local_path)

    a = sels[0]
    b = next(s for s in sels[1:] if file_of(s) != file_of(a)
             and source.matrix(one, s).shape == source.matrix(one, a).shape)  # fmt: skip
    on_node._NODES[(ray_cluster.address, file_of(b))] = ray_cluster.nodes["c"].node_id
    on_node._NODES[(ray_cluster.address, file_of(a))] = ray_cluster.nodes["b"].node_id
    try:
        m, ga, gb, gd = source.view(ws, "ab", [a, b], None, k=3, **kw)
    finally:
        on_node._NODES.clear()
    xa, xb = source.matrix(one, a), source.matrix(one, b)
    assert m == compare.compare(xb, xa, k=3)
    _same_grid(gd, lod.build_grid(xb.float() - xa.float(), **kw))
    _same_grid(gb, lod.build_grid(xb, **kw))


def test_a_3d_view_moves_the_tile_not_the_tensor(ray_cluster, on_node, tmp_path: Path) -> None:
    """One Qwen3-30B-A3B-shaped activation (2000 tokens x 2048 hidden, bf16) on node c."""
    from studio_backend.dumps.cluster.where import Where

    g = torch.Generator().manual_seed(3)
    t = (torch.randn(2000, 2048, generator=g) * 0.5).bfloat16()
    t[1234, 77] = -420.0  # a massive activation: it must survive pooling exactly
    path = tmp_path / "act.pt"
    torch.save(t, path)
    w = Where("r", ray_cluster.address, "npu3_4003", str(tmp_path), str(tmp_path), None, None,
              str(path))  # fmt: skip
    on_node._NODES[(ray_cluster.address, str(path))] = ray_cluster.nodes["c"].node_id
    try:
        rows, cols = lod.grid_shape(2000, 2048)  # the page's default budget: 80k cells
        kw = {"max_tokens": rows, "max_channels": cols}
        grid = on_node.compute(None, "grid", [0], [w], [Recipe(1)], kw)
        tile_bytes, by = on_node.MOVED["last"], on_node.MOVED["by"]
        whole = on_node.fetch(w)  # the explicit full download, for the comparison
        tensor_bytes = on_node.MOVED["last"]
    finally:
        on_node._NODES.clear()
    ref = lod.build_grid(t, **kw)
    _same_grid(grid, ref)
    assert float(grid.raw.min()) == -420.0 and torch.equal(whole, t)
    assert by == on_node.MOVED["by"] == "ray"  # both sized by Ray's object directory
    assert t.nbytes <= tensor_bytes < t.nbytes + 4096  # Ray's size of the tensor object
    # 80k cells x (2 B value + 2 B token + 2 B channel) and the axes: about 1/17 of the tensor
    assert tile_bytes < t.nbytes / 12, (tile_bytes, t.nbytes)
    print(f"\n3D view of a 2000x2048 bf16 tensor: {tile_bytes} B moved vs {tensor_bytes} B "
          f"({tensor_bytes / tile_bytes:.1f}x less)")  # fmt: skip


PAGE = str(ROOT / "app_pages/activations.py")


def test_the_page_views_a_remote_tensor_without_moving_it(
    ray_cluster, on_node, tmp_path: Path, workspace_dir: Path
) -> None:
    ws, one, run = _ingest_both(ray_cluster, tmp_path, workspace_dir)
    ws.close()
    sel = Selected(run, 0, "model.layers.1.input_layernorm", "input", 0, None)
    x = source.matrix(one, sel)
    want = outliers.summarize(x)
    for tab in ("Surface", "Statistics"):
        at = AppTest.from_file(PAGE, default_timeout=120)
        at.query_params.update(pattern=r"layers\.1\.input_layernorm$", io="input", tab=tab)
        at.run()
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]
        assert any("another Ray node" in c.value for c in at.caption)
        if tab == "Surface":
            metrics = {m.label: m.value for m in at.metric}
            assert metrics["top channel"] == str(want.top_channel)
            assert metrics["max |x|"] == f"{want.absmax:.4g}"
        else:
            top = at.dataframe[0].value
            assert top.equals(outliers.top_k(x, 20))


def test_studio_render_pools_on_the_node(ray_cluster, on_node, tmp_path: Path, monkeypatch) -> None:
    """`studio render`'s grids of a Ray-ingested run equal those of the one-machine run."""
    from studio_backend.analysis import render

    ws, one, run = _ingest_both(ray_cluster, tmp_path)
    real_job, grids = render.Job, {}

    def job(label, grid, *rest):  # noqa: ANN001, ANN202 - records each pooled grid
        grids.setdefault(label, []).append(grid)
        return real_job(label, grid, *rest)

    monkeypatch.setattr(render, "Job", job)
    kw = {"pattern": r"layers\.1\.(input_layernorm|self_attn\.qkv_proj)$", "io": "output",
          "fmt": "html", "workers": 1, "max_tokens": 4, "max_channels": 5}  # fmt: skip
    for w, out in ((ws, "ray"), (one, "one")):
        files = render.render(w, run, tmp_path / f"png-{out}", **kw)
        assert len(files) == 4  # the layer norm and q, k, v
    assert len(grids) == 4
    for label, (g_ray, g_one) in grids.items():
        _same_grid(g_ray, g_one)
        assert g_one.pooled, label


def _only_on(node_id: str):  # noqa: ANN202
    """A `has` task that finds files on one node only (as on separate disks)."""

    def has(p: str) -> bool:
        return Path(p).is_file() and ray.get_runtime_context().get_node_id() == node_id

    return ray.remote(num_cpus=0)(has)


def test_a_view_whose_node_is_down_says_so_and_works_once_it_is_back(
    ray_cluster, on_node, tmp_path: Path
) -> None:
    from studio_backend.errors import StudioError

    t = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    path = tmp_path / "act.pt"
    torch.save(t, path)
    w = on_node.Where("r", ray_cluster.address, "npu3_4003", str(tmp_path), str(tmp_path), None,
                      None, str(path))  # fmt: skip
    fns = on_node._remote_fns(ray)
    real_has = fns["has"]
    kw = {"max_tokens": 2, "max_channels": 3}
    want = lod.build_grid(t, **kw)
    try:
        fns["has"] = _only_on(ray_cluster.nodes["c"].node_id)
        _same_grid(on_node.compute(None, "grid", [0], [w], [Recipe(1)], kw), want)
        ray_cluster.kill("c")
        try:
            with pytest.raises(
                StudioError, match=r"npu3_4003.*(is its node up|once the node is back)"
            ):
                on_node.compute(None, "grid", [0], [w], [Recipe(1)], kw)
        finally:
            ray_cluster.revive("c")
        fns["has"] = _only_on(ray_cluster.nodes["c"].node_id)  # back, under a new node id
        _same_grid(on_node.compute(None, "grid", [0], [w], [Recipe(1)], kw), want)
    finally:
        fns["has"] = real_has
        on_node._NODES.clear()
