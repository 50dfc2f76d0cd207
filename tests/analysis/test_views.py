"""studio_backend/analysis/views.py on one machine: the same numbers as the direct calls, no Ray import,
and the compact wire form restores every grid exactly."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio_backend.analysis import compare, lod, outliers, source, views
from studio_backend.analysis.source import Selected
from tests.analysis.dumpdata import write_dump

FIELDS = ("values", "raw", "tokens", "channels", "token_axis", "channel_axis")


def _same(g, ref) -> None:
    for f in FIELDS:
        a, b = getattr(g, f), getattr(ref, f)
        assert a.dtype == b.dtype, f
        np.testing.assert_array_equal(a, b, err_msg=f)
    assert (g.pooled, g.source_shape) == (ref.pooled, ref.source_shape)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
@pytest.mark.parametrize("opts", [{}, {"sort_channels": True}, {"absolute": True, "log": True},
                                  {"channels": np.array([3, 9, 700, 701])}])  # fmt: skip
def test_compact_round_trip_is_exact(dtype, opts) -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(300, 1000, generator=g) * 3).to(dtype)
    ref = lod.build_grid(x, max_tokens=37, max_channels=81, **opts)
    wire = views.compact(ref)
    _same(views.expand(wire), ref)
    assert len(pickle.dumps(wire, protocol=5)) < len(pickle.dumps(ref, protocol=5))
    out = views.expand(views.compact((ref, 3, "x")))
    _same(out[0], ref)
    assert out[1:] == (3, "x")


def test_local_views_equal_direct_calls_without_ray(tmp_path: Path, workspace, monkeypatch) -> None:
    from studio_backend.dumps.ingest import ingest_dump

    monkeypatch.setitem(sys.modules, "ray", None)  # any import of ray would fail
    session, _ = write_dump(tmp_path / "dump")
    run = ingest_dump(workspace, session)
    a = Selected(run, 0, "model.layers.1.input_layernorm", "input", 0, None)
    b = Selected(run, 0, "model.layers.2.input_layernorm", "input", 0, None)
    k = Selected(run, 0, "model.layers.0.self_attn.qkv_proj", "output", 0, "k")
    for sel in (a, k):
        x = source.matrix(workspace, sel)
        rec = [source.recipe(workspace, sel)[1]]
        assert not source.is_remote(workspace, sel)
        kw = {"max_tokens": 5, "max_channels": 7}
        _same(source.view(workspace, "grid", [sel], rec, **kw), lod.build_grid(x, **kw))
        got = source.view(workspace, "summary", [sel], rec, t0=2, t1=9)
        assert got == outliers.summarize(x[2:9])
        want = outliers.channel_table(x[3:20], 4)
        want["token"] += 3
        assert source.view(workspace, "channel_table", [sel], rec, k=4, t0=3, t1=20).equals(want)
        shape = source.view(workspace, "shape", [sel],
                            [source.recipe(workspace, sel, as_stored=True)[1]])  # fmt: skip
        t = source.load(workspace, sel)
        assert shape == (tuple(t.shape), str(t.dtype).removeprefix("torch."))
    xa, xb = source.matrix(workspace, a), source.matrix(workspace, b)
    m, ga, gb, gd = source.view(workspace, "ab", [a, b], None, k=3, max_tokens=4, max_channels=9)
    assert m == compare.compare(xb, xa, k=3)
    _same(gd, lod.build_grid(xb.float() - xa.float(), max_tokens=4, max_channels=9))
    _same(ga, lod.build_grid(xa, max_tokens=4, max_channels=9))
