"""The Trace page (AppTest) on a workspace with a module trace and two profiles."""

from __future__ import annotations

import json

import torch
from streamlit.testing.v1 import AppTest

from studio_backend.trace.ingest import ingest_profile, store_trace
from studio_backend.trace.module_tracer import trace_modules
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT
from tests.trace.fixtures import write_kineto_gpu, write_nsys
from tests.trace.tiny import TinyDecoder


def seed(ws_dir, tmp_path) -> tuple[str, str]:
    ws = open_workspace(ws_dir)
    model = TinyDecoder(2)
    with trace_modules(model) as t, torch.no_grad():
        model(torch.arange(7).unsqueeze(0))
    store_trace(ws, t.calls, name="tiny-decoder", model="TinyDecoder")
    a = ingest_profile(ws, write_kineto_gpu(tmp_path / "gpu.json"), name="kineto-gpu")
    b = ingest_profile(ws, write_nsys(tmp_path / "nsys.sqlite"), name="nsys")
    ws.close()
    return a, b


def test_page_shows_calls_profiles_and_diff(workspace_dir, tmp_path) -> None:
    kineto_id, _ = seed(workspace_dir, tmp_path)
    at = AppTest.from_file(str(ROOT / "app_pages/trace.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    counts = at.dataframe[0].value
    assert list(zip(counts["module_class"], counts["calls"], strict=True))[:2] == [
        ("Linear", 9), ("RMSNorm", 5)
    ]  # fmt: skip
    order = at.dataframe[1].value
    assert [m.strip() for m in order["module"]][:3] == [
        "model.layers.0", "model.layers.0.input_layernorm", "model.layers.0.self_attn"
    ]  # fmt: skip
    assert order["output"].iloc[3] == "(1, 7, 48)"  # qkv_proj
    # profile A = nsys (latest), compared with the Kineto one: a diff table is shown
    diff = next(d.value for d in at.dataframe if "delta_us" in d.value.columns)
    row = diff.set_index("key").loc["paged_attention_v2_kernel"]
    assert row["total_us_a"] == 40.0 and row["total_us_b"] == 70.0
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Format"] == "nsys" and metrics["Unattributed"] == "0.0%"
    at.selectbox(key="profile_a").set_value(kineto_id).run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Format"] == "kineto"
    lost = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert json.loads(lost.to_json(orient="records"))[0]["calls"] == 3


def test_page_ranks_ops_by_self_time(workspace_dir, cpu_trace) -> None:
    """A real CPU profile: the top table shows self and total time, ranked by self time by
    default (as torch.profiler's table) and by total on request, equal to analysis.top."""
    from studio_backend.trace import analysis

    ws = open_workspace(workspace_dir)
    pid = ingest_profile(ws, cpu_trace[0], name="cpu")
    want_self = analysis.top(ws, pid, kind="cpu_op", n=15)
    want_total = analysis.top(ws, pid, kind="cpu_op", n=15, by="total")
    ws.close()
    at = AppTest.from_file(str(ROOT / "app_pages/trace.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    top = next(d.value for d in at.dataframe if "self_us" in d.value.columns)
    assert top["name"].tolist() == want_self["name"].tolist()
    assert top["self_us"].tolist() == want_self["self_us"].tolist()
    assert top["self_us"].is_monotonic_decreasing and top.iloc[0]["self_us"] < top["total_us"].max()
    at.radio(key="profile_rank_by").set_value("total").run()
    assert not at.exception, at.exception
    top = next(d.value for d in at.dataframe if "self_us" in d.value.columns)
    assert top["name"].tolist() == want_total["name"].tolist()
    assert top["total_us"].is_monotonic_decreasing


def test_profile_a_run_from_the_page(workspace_dir, tmp_path) -> None:
    """The page's twin of `studio profile run`: one click stores a profile whose kernels are
    attributed to every decoder layer of the model."""
    from studio_backend.models.create import create_model
    from studio_backend.trace import analysis
    from studio_backend.workspace import open_workspace

    model = create_model(tmp_path / "tiny", preset="tiny", seed=0)
    at = AppTest.from_file(str(ROOT / "app_pages/trace.py"), default_timeout=300).run()
    at.text_input(key="prof_model").set_value(str(model))
    at.selectbox(key="prof_engine").set_value("transformers")
    next(b for b in at.button if b.label == "Profile").click().run()
    assert not at.exception, at.exception
    ws = open_workspace(workspace_dir)
    try:
        profiles = analysis.list_profiles(ws)
        assert len(profiles) == 1
        layers = analysis.per_layer(ws, profiles["profile_id"].iloc[0])
        n_layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
        assert set(layers["layer"].dropna().astype(int)) == set(range(n_layers))
    finally:
        ws.close()
