"""The surface toggles' server side: column sort and the component payload, against numpy."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import torch

from studio_backend.analysis import lod
from studio_ui.components.surface import payload
from studio_ui.figures.style import value_label
from studio_ui.services_activations import sort_columns


def _x(tokens: int = 60, channels: int = 97, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((tokens, channels)).astype(np.float32)
    x[:, 40] *= 30  # an outlier channel
    x[7, 90] = -500.0  # a massive negative activation
    return np.asarray(torch.from_numpy(x).bfloat16().float())  # bf16-exact values


def test_sort_columns_orders_pooled_columns_by_block_absmax() -> None:
    x = _x()
    g = lod.build_grid(torch.from_numpy(x).bfloat16(), max_tokens=16, max_channels=20)
    rows, cols = g.raw.shape
    bc = math.ceil(x.shape[1] / cols)
    # Oracle from the full tensor: a column's absmax is the max |x| of the channels it pools.
    absmax = np.array([np.abs(x[:, j * bc : (j + 1) * bc]).max() for j in range(cols)])
    order = np.argsort(-absmax, kind="stable")
    s = sort_columns(g)
    np.testing.assert_array_equal(np.abs(s.raw).max(axis=0), absmax[order])
    np.testing.assert_array_equal(s.channels, g.channels[:, order])
    np.testing.assert_array_equal(s.tokens, g.tokens[:, order])
    np.testing.assert_array_equal(s.channel_axis, np.arange(cols) * bc)
    # Every cell still names the real position of its value.
    np.testing.assert_array_equal(x[s.tokens, s.channels], s.raw)
    assert s.channels[np.unravel_index(np.abs(s.raw).argmax(), s.raw.shape)] == 90
    assert 90 // bc == order[0]  # the massive activation's column comes first


def test_sort_columns_unpooled_equals_full_resolution_sort() -> None:
    x = _x(tokens=12, channels=97)
    full = lod.build_grid(torch.from_numpy(x), max_tokens=64, max_channels=128, sort_channels=True)
    s = sort_columns(lod.build_grid(torch.from_numpy(x), max_tokens=64, max_channels=128))
    np.testing.assert_array_equal(s.channels, full.channels)
    np.testing.assert_array_equal(s.raw, full.raw)
    np.testing.assert_array_equal(s.channel_axis, full.channel_axis)
    np.testing.assert_array_equal(s.channels[0], np.argsort(-np.abs(x).max(0), kind="stable"))


def test_sort_columns_ties_keep_channel_order_and_transform_commutes() -> None:
    x = np.array([[1.0, -3.0, 3.0, 2.0], [0.5, 1.0, -1.0, -2.0]], dtype=np.float32)
    g = lod.build_grid(torch.from_numpy(x), max_tokens=8, max_channels=8)
    s = sort_columns(g)
    np.testing.assert_array_equal(s.channels[0], [1, 2, 3, 0])  # |-3| ties |3|: 1 before 2
    t = sort_columns(lod.build_grid(torch.from_numpy(x), max_tokens=8, max_channels=8, log=True))
    want = np.sign(x[:, [1, 2, 3, 0]]) * np.log10(1 + np.abs(x[:, [1, 2, 3, 0]]))
    np.testing.assert_allclose(t.values, want, rtol=1e-6)


def _decode(b64: str, dtype: str, shape) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=dtype).reshape(shape)


def test_payload_carries_grid_once_and_every_state_label() -> None:
    x = _x()
    g = lod.build_grid(torch.from_numpy(x), max_tokens=16, max_channels=20)
    texts = [f"t{i}" for i in range(x.shape[0])]
    p = json.loads(payload(g, title="m", texts=texts, revision="m", height=500))
    d = p["data"]
    shape = (d["rows"], d["cols"])
    assert shape == g.raw.shape
    np.testing.assert_array_equal(_decode(d["raw"], "<f4", shape), g.raw)
    np.testing.assert_array_equal(_decode(d["tokens"], "<i4", shape), g.tokens)
    np.testing.assert_array_equal(_decode(d["channels"], "<i4", shape), g.channels)
    assert d["x"] == g.channel_axis.tolist() and d["y"] == g.token_axis.tolist()
    assert d["xRank"] == (np.arange(shape[1]) * math.ceil(x.shape[1] / shape[1])).tolist()
    assert d["texts"] == [repr(t) for t in texts]
    trace = p["fig"]["data"][0]
    assert "z" not in trace and "customdata" not in trace  # the arrays travel once, in data
    assert p["fig"]["layout"]["uirevision"] == "m" and p["fig"]["layout"]["height"] == 500
    assert sorted(p["views"]) == [f"{a}{b}{c}" for a in "01" for b in "01" for c in "01"]
    for k, v in p["views"].items():
        a, lg, so = (c == "1" for c in k)
        assert v["label"] == value_label(a, lg)
        assert v["xtitle"] == ("channel rank" if so else "channel")
        assert ("(rank %{x})" in v["template"]) == so
        assert "token %{customdata[0]} %{text}<br>channel %{customdata[1]}" in v["template"]
        assert "value %{customdata[2]:.4g}" in v["template"]
