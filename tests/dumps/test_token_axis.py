"""Token axis on dumps that msit_llm and msprobe really wrote of a transformers Qwen3-MoE model.

The oracle is numpy on the same tensors reshaped by hand ([batch, seq, hidden] ->
[batch*seq, hidden]; q_norm [batch, seq, heads, head_dim] -> [batch*seq, heads*head_dim]) and
what plain torch forward hooks saw in the same run (``tests/dumps/hf_tiny.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio_backend.analysis import compare, lod, outliers, source
from studio_backend.analysis.source import Selected
from studio_backend.dumps import axis_store, query
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.workspace import open_workspace

pytest.importorskip("transformers")
pytest.importorskip("msprobe")
pytest.importorskip("msit_llm")

ROOT = Path(__file__).resolve().parents[2]
TOKENS, HIDDEN = 14, 64  # batch 2 x seq 7
SPIKE_TOKEN, SPIKE_CHANNEL = 9, 5  # batch 1, position 2 (token id 77), embedding channel 5


@pytest.fixture(scope="module")
def dumps(tmp_path_factory) -> dict[str, Path]:
    """The tiny model dumped by msit, msprobe (tensors) and msprobe (statistics only)."""
    base = tmp_path_factory.mktemp("hf")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kernels")])}
    out = {}
    for tool in ("msit", "msprobe", "msprobe-stats", "msit-stats"):
        subprocess.run(
            [sys.executable, "-m", "tests.dumps.hf_tiny", tool, str(base / tool)],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        out[tool] = base / tool
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    w = open_workspace(tmp_path_factory.mktemp("ws"))
    yield w
    w.close()


@pytest.fixture(scope="module")
def runs(dumps, ws) -> dict[str, str]:
    return {tool: ingest_dump(ws, d / "dump") for tool, d in dumps.items()}


def _row(ws, run: str, module: str, io: str = "output", idx: int = 0):
    df = query.find_tensors(ws, run, module_regex=f"^{module.replace('.', '[.]')}$", io=io)
    df = df[(df.idx == idx) & df.part.isna() & df.arg_name.isna()]
    assert len(df) == 1, df
    return df.iloc[0]


def _stats(ws, tid: int) -> dict:
    return ws.cursor().execute("SELECT * FROM dump_stats WHERE tensor_id = ?", [tid]).df().iloc[0]


def _kurtosis(m: np.ndarray) -> float:
    d = m.astype(np.float64).reshape(-1)
    d = d - d.mean()
    return float((d**4).mean() / (d**2).mean() ** 2)


def _file_of(dump: Path, module: str, tool: str) -> Path:
    if tool == "msit":
        return next(dump.glob(f"dump/msit_dump_*/torch_tensors/*/0/root.{module}/output*.pth"))
    return next(
        dump.glob(f"dump/step0/*/dump_tensor_data/Module.{module}.[A-Z]*.forward.0.output.0.pt")
    )


@pytest.mark.parametrize("tool", ["msit", "msprobe"])
def test_axes_decided_per_layout(tool: str, runs, ws) -> None:
    run = runs[tool]
    want = {
        "model.embed_tokens": (2, "[batch, seq, hidden]"),
        "model.layers.0.input_layernorm": (2, "[batch, seq, hidden]"),
        "model.layers.0.self_attn.q_norm": (2, "[batch, seq, heads, head_dim]"),
        "model.layers.0.self_attn.k_norm": (2, "[batch, seq, heads, head_dim]"),
        "model.layers.0.self_attn.k_proj": (2, "[batch, seq, channels]"),
        "model.layers.0.mlp.gate": (1, "[tokens, channels]"),  # the router sees flat tokens
        "model.layers.0.mlp.experts": (1, "[tokens, hidden]"),
        "lm_head": (2, "[batch, seq, channels]"),
    }
    for module, (k, layout) in want.items():
        a = axis_store.get(ws, int(_row(ws, run, module).tensor_id))
        assert (a.token_dims, a.layout) == (k, layout), module
    ids = axis_store.get(ws, int(_row(ws, run, "model.embed_tokens", "input").tensor_id))
    assert (ids.token_dims, ids.layout) == (2, "[batch, seq]")
    assert (
        "input ids are [2, 7]"
        in ws.cursor()
        .execute("SELECT reason FROM dump_axis_runs WHERE run_id = ?", [run])
        .fetchone()[0]
    )


@pytest.mark.parametrize("tool", ["msit", "msprobe"])
@pytest.mark.parametrize(
    "module",
    ["model.embed_tokens", "model.layers.0.input_layernorm", "model.layers.0.self_attn.q_norm",
     "model.layers.1.mlp", "model.norm"],
)  # fmt: skip
def test_stats_equal_numpy_on_tokens(tool: str, module: str, dumps, runs, ws) -> None:
    run = runs[tool]
    row = _row(ws, run, module)
    raw = torch.load(_file_of(dumps[tool], module, tool), weights_only=True).numpy()
    assert raw.shape[:2] == (2, 7)
    m = raw.reshape(TOKENS, -1)  # batch x seq are tokens; the rest (hidden, heads x head_dim)
    np.testing.assert_array_equal(
        m, np.load(dumps[tool] / "oracle" / f"{module}.npy").reshape(TOKENS, -1)
    )
    s = _stats(ws, int(row.tensor_id))
    np.testing.assert_allclose(s.channel_absmax, np.abs(m).max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(s.token_absmax, np.abs(m).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(s.channel_mean_abs, np.abs(m).mean(axis=0), rtol=1e-5)
    assert len(s.channel_absmax) == m.shape[1] and len(s.token_absmax) == TOKENS
    assert s["kurtosis"] + 3.0 == pytest.approx(_kurtosis(m), rel=1e-5)  # excess vs Pearson
    top = (
        ws.cursor()
        .execute(
            "SELECT token, channel, value FROM dump_outliers WHERE tensor_id = ? ORDER BY k LIMIT 1",
            [int(row.tensor_id)],
        )
        .fetchone()
    )
    t, c = np.unravel_index(np.argmax(np.abs(m)), m.shape)
    assert (top[0], top[1]) == (t, c)
    assert top[2] == pytest.approx(float(m[t, c]))


@pytest.mark.parametrize("tool", ["msit", "msprobe"])
def test_planted_outliers_land_on_token_and_channel(tool: str, runs, ws, dumps) -> None:
    run = runs[tool]
    emb = _row(ws, run, "model.embed_tokens")
    top = (
        ws.cursor()
        .execute(
            "SELECT token, channel, value FROM dump_outliers WHERE tensor_id = ? AND k = 0",
            [int(emb.tensor_id)],
        )
        .fetchone()
    )
    assert top == (SPIKE_TOKEN, SPIKE_CHANNEL, 40.0)  # not "token 1, channel 2*64+5"
    # `studio stats` top channels: channel 3 of input_layernorm (weight 50x) for every token
    from studio_backend.dumps.cli import stats_records

    rec = stats_records(ws, run, r"layers\.0\.input_layernorm$", None, False)
    out = next(r for r in rec if r["io"] == "output")
    assert out["top_channels"][0]["channel"] == 3
    assert out["token_axis"] == "[batch, seq, hidden]" and out["tokens"] == TOKENS
    # the page's view: surface grid and tables on [14, 64]
    sel = Selected(run, 0, "model.layers.0.input_layernorm", "output", 0, None)
    x = source.matrix(ws, sel)
    raw = np.load(dumps[tool] / "oracle" / "model.layers.0.input_layernorm.npy")
    np.testing.assert_array_equal(x.numpy(), raw.reshape(TOKENS, HIDDEN))
    grid = lod.build_grid(x, max_tokens=400, max_channels=800)
    assert grid.source_shape == (TOKENS, HIDDEN) and not grid.pooled
    np.testing.assert_array_equal(grid.raw, raw.reshape(TOKENS, HIDDEN))
    assert outliers.channel_table(x, 1)["channel"].iloc[0] == 3
    assert outliers.summarize(x).top_channel == 3


def test_q_norm_view_is_tokens_by_heads_times_head_dim(runs, ws, dumps) -> None:
    sel = Selected(runs["msprobe"], 0, "model.layers.0.self_attn.q_norm", "output", 0, None)
    x = source.matrix(ws, sel)
    raw = np.load(dumps["msprobe"] / "oracle" / "model.layers.0.self_attn.q_norm.npy")
    assert raw.shape == (2, 7, 4, 16)
    np.testing.assert_array_equal(x.numpy(), raw.reshape(14, 64))  # channel = head*16 + d


def test_compare_msit_and_msprobe_runs_on_the_token_axis(runs, ws) -> None:
    a = source.matrix(ws, Selected(runs["msit"], 0, "model.layers.1.mlp", "output", 0, None))
    b = source.matrix(ws, Selected(runs["msprobe"], 0, "model.layers.1.mlp", "output", 0, None))
    assert tuple(a.shape) == tuple(b.shape) == (TOKENS, HIDDEN)
    m = compare.compare(b, a, k=4)
    na, nb = a.double().numpy(), b.double().numpy()
    assert m.cosine == pytest.approx(
        float((na * nb).sum() / np.linalg.norm(na) / np.linalg.norm(nb))
    )
    assert m.topk_jaccard == 1.0 and m.absmax_spearman == pytest.approx(1.0)
    assert m.max_abs_error == pytest.approx(float(np.abs(na - nb).max()), abs=1e-12)


def test_override_changes_stats_and_back(runs, ws, dumps) -> None:
    run = runs["msprobe"]
    row = _row(ws, run, "model.layers.0.input_layernorm")
    tid = int(row.tensor_id)
    counts = axis_store.set_override(ws, run, r"layers\.0\.input_layernorm$", 1)
    assert counts == {"tensors": 2, "changed": 2, "skipped": 0}
    assert axis_store.restat(ws, run) == 2
    a = axis_store.get(ws, tid)
    assert (a.token_dims, a.source) == (1, "override")
    raw = np.load(dumps["msprobe"] / "oracle" / "model.layers.0.input_layernorm.npy")
    np.testing.assert_allclose(
        _stats(ws, tid).channel_absmax, np.abs(raw.reshape(2, 7 * 64)).max(0), rtol=1e-6
    )
    axis_store.set_override(ws, run, r"layers\.0\.input_layernorm$", None)
    axis_store.restat(ws, run)
    a = axis_store.get(ws, tid)
    assert (a.token_dims, a.source) == (2, "format")
    assert len(_stats(ws, tid).channel_absmax) == HIDDEN


@pytest.mark.parametrize("tool", ["msprobe", "msit"])
def test_statistics_only_dump(tool: str, runs, ws, dumps) -> None:
    """msprobe ``task: statistics`` (dump.json Max/Min/Mean/Norm) and msit
    ``dump_statistics_mode=1`` (statistics.csv) write no tensors: their numbers are all kept,
    and equal numpy on the tensors the tensor-mode run of the same model wrote."""
    from studio_backend.dumps.formats import msit, msprobe

    run = runs[f"{tool}-stats"]
    assert query.find_tensors(ws, run).empty
    assert not [p for p in dumps[f"{tool}-stats"].rglob("*.pt*")]
    stats = query.tool_stats(ws, run)
    if tool == "msprobe":
        files = sorted(dumps[tool].glob("dump/step0/*/dump_tensor_data/*.pt"))
        refs = [msprobe.parse_name(f.name) for f in files]
        keys = [None if r is None else (r[0], r[3], r[4], r[5]) for r in refs]
    else:
        files = sorted(dumps[tool].glob("dump/msit_dump_*/torch_tensors/*/0/*/*.pth"))
        refs = [msit.parse_file(f) for f in files]
        keys = [None if r is None or r.arg_name else (r.module, r.io, r.idx, None) for r in refs]
    checked = 0
    for f, key in zip(files, keys, strict=True):
        if key is None:  # parameters (msprobe), nested outputs (msit: not in statistics.csv)
            continue
        module, io, idx, arg = key
        r = stats[(stats.module == module) & (stats.io == io) & (stats.idx == idx)]
        r = r[r.arg_name.isna()] if arg is None else r[r.arg_name == arg]
        assert len(r) == 1, f.name
        t = torch.load(f, weights_only=True)
        x = t.double().numpy()
        assert r["max"].iloc[0] == pytest.approx(float(x.max()), rel=1e-6, abs=1e-6), f.name
        assert r["min"].iloc[0] == pytest.approx(float(x.min()), rel=1e-6, abs=1e-6), f.name
        assert r["absmax"].iloc[0] == pytest.approx(float(np.abs(x).max()), rel=1e-6), f.name
        if t.is_floating_point():
            assert r["norm"].iloc[0] == pytest.approx(float(np.linalg.norm(x)), rel=1e-5), f.name
            assert r["mean"].iloc[0] == pytest.approx(float(x.mean()), rel=1e-4, abs=1e-6), f.name
        checked += 1
    assert checked > 60


def test_vllm_layout_tokens_first_and_heads(synth_dump, tmp_path: Path) -> None:
    """A vLLM-shaped msit dump (tp=2): [tokens, hidden] and q_norm [tokens, heads, head_dim]."""
    session, truth, cfg = synth_dump(2, tokens=(5,))
    w = open_workspace(tmp_path / "ws_vllm")
    try:
        run = ingest_dump(w, session)
        assert w.cursor().execute(
            "SELECT batched FROM dump_axis_runs WHERE run_id = ?", [run]
        ).fetchone() == (False,)
        q = truth[(0, "model.layers.0.self_attn.q_norm", "output", 0)]
        assert q.ndim == 3
        row = _row(w, run, "model.layers.0.self_attn.q_norm")
        a = axis_store.get(w, int(row.tensor_id))
        assert (a.token_dims, a.layout) == (1, "[tokens, heads, head_dim]")
        m = q.reshape(q.shape[0], -1)
        np.testing.assert_allclose(_stats(w, int(row.tensor_id)).channel_absmax, np.abs(m).max(0))
        ln = _row(w, run, "model.layers.0.input_layernorm")
        a = axis_store.get(w, int(ln.tensor_id))
        assert (a.token_dims, a.layout) == (1, "[tokens, hidden]")
        x = truth[(0, "model.layers.0.input_layernorm", "output", 0)]
        sel = Selected(run, 0, "model.layers.0.input_layernorm", "output", 0, None)
        np.testing.assert_array_equal(source.matrix(w, sel).numpy(), x)
    finally:
        w.close()


def test_cli_token_axis_and_statistics_only_stats(dumps, workspace_dir: Path, capsys) -> None:
    from studio_backend.cli import main

    probe = str(dumps["msprobe"] / "dump")
    assert (
        main(["token-axis", probe, "--module", r"layers\.0\.input_layernorm$", "--token-dims", "1"])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "model.layers.0.input_layernorm output[0]: [2, 7, 64] as [tokens, c0, c1] (override)" in out
    )
    assert "2 of 2 tensor(s) changed axis" in out
    assert main(["stats", probe, "--json", "--module", r"layers\.0\.input_layernorm$"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["tokens"], r["channels"], r["axis_source"]) for r in recs] == [
        (2, 448, "override")
    ] * 2
    assert main(["token-axis", probe, "--module", r"layers\.0\.input_layernorm$", "--auto"]) == 0
    capsys.readouterr()
    assert main(["stats", probe, "--json", "--module", r"layers\.0\.input_layernorm$"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["tokens"], r["channels"], r["token_axis"]) for r in recs] == [
        (TOKENS, HIDDEN, "[batch, seq, hidden]")
    ] * 2
    assert recs[1]["top_channels"][0]["channel"] == 3
    # the same override given at ingest time (a fresh workspace)
    assert main(["--workspace", str(workspace_dir.parent / "ws2"), "ingest", probe,
                 "--token-axis", r"q_norm$=1"]) == 0  # fmt: skip
    assert "token axis /q_norm$/ -> 1: 4 of 4 tensor(s) changed" in capsys.readouterr().out
    assert main(["ingest", probe, "--token-axis", "q_norm"]) == 2
    assert "expected REGEX=N" in capsys.readouterr().err
    assert main(["token-axis", probe, "--module", "nothing_like_this$", "--token-dims", "1"]) == 2
    assert "matches no tensor" in capsys.readouterr().err
    # a statistics-only dump: `studio stats` shows what the tool wrote
    stats_dump = dumps["msprobe-stats"] / "dump"
    assert main(["stats", str(stats_dump), "--json", "--module", r"^model\.norm$"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    entry = next(
        v for k, v in json.loads(next(stats_dump.glob("step0/*/dump.json")).read_text())["data"].items()
        if k.startswith("Module.model.norm.")
    )  # fmt: skip
    assert [(r["io"], r["source"]) for r in recs] == [("input", "tool"), ("output", "tool")]
    assert (
        recs[1]["max"] == entry["output"][0]["Max"]
        and recs[1]["norm"] == entry["output"][0]["Norm"]
    )
    assert main(["stats", str(stats_dump)]) == 0
    assert "statistics written by the dump tool" in capsys.readouterr().out


def test_page_token_axis_widget_and_statistics_only(dumps, workspace_dir: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from studio_ui.navigation import ROOT as APP

    w = open_workspace(workspace_dir)
    run = ingest_dump(w, dumps["msprobe"] / "dump")
    stats_run = ingest_dump(w, dumps["msprobe-stats"] / "dump")
    w.close()
    page = str(APP / "app_pages/activations.py")
    at = AppTest.from_file(page, default_timeout=120)
    at.query_params["run"] = run
    at.query_params["pattern"] = r"layers\.0\.input_layernorm"
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="act_axis").value == 2
    assert any("[batch, seq, hidden]" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["top channel"] == "3"
    # the outlier table is on the Statistics tab (tabs compute when opened)
    at_stats = AppTest.from_file(page, default_timeout=120)
    at_stats.query_params["run"] = run
    at_stats.query_params["pattern"] = r"layers\.0\.input_layernorm"
    at_stats.query_params["tab"] = "Statistics"
    at_stats.run()
    assert not at_stats.exception, at_stats.exception
    top = at_stats.dataframe[0].value
    assert (top["token"].iloc[0], top["channel"].iloc[0]) == (int(np.argmax(np.abs(
        np.load(dumps["msprobe"] / "oracle" / "model.layers.0.input_layernorm.npy").reshape(TOKENS, HIDDEN)
    )) // HIDDEN), 3)  # fmt: skip
    at.selectbox(key="act_axis").set_value(1).run()  # view [2, 7*64]: flat "channels"
    assert not at.exception, at.exception
    assert int({m.label: m.value for m in at.metric}["top channel"]) % HIDDEN == 3
    at.button(key="act_axis_save").click().run()
    assert not at.exception, at.exception
    w = open_workspace(workspace_dir)
    try:
        tid = int(_row(w, run, "model.layers.0.input_layernorm").tensor_id)
        assert axis_store.get(w, tid).source == "override"
        assert len(_stats(w, tid).channel_absmax) == 7 * HIDDEN
    finally:
        w.close()
    # statistics-only run: the tool's statistics instead of a surface
    at2 = AppTest.from_file(page, default_timeout=120)
    at2.query_params["run"] = stats_run
    at2.run()
    assert not at2.exception, at2.exception
    assert any("statistics-only dump" in i.value for i in at2.info)
    table = at2.dataframe[0].value
    assert {"max", "min", "mean", "norm", "absmax"} <= set(table.columns) and len(table) > 60
    at3 = AppTest.from_file(str(APP / "app_pages/dumps.py"), default_timeout=120).run()
    next(s for s in at3.selectbox if s.label == "Run").set_value(stats_run).run()
    assert not at3.exception, at3.exception
    assert any(h.value == "Statistics written by the dump tool" for h in at3.subheader)
    assert len(at3.dataframe[-1].value) == len(table)


@pytest.mark.slow
def test_reference_engine_msprobe_dump_is_tokens_first(tmp_path: Path) -> None:
    """The reference engine (vLLM's Qwen3-MoE modules) under msprobe: flat [tokens, ...]."""
    offline = pytest.importorskip("studio_backend.engines.reference.offline")
    from studio_backend.engines.reference.dumping import DumpOptions
    from studio_backend.models.create import create_model

    tiny = create_model(tmp_path / "tiny", preset="tiny", seed=0)
    opts = DumpOptions(tool="msprobe", dump_path=tmp_path / "probe", token_range=[0])
    root = offline.run_offline(tiny, tp=1, prompts=[[11, 57, 203, 9, 100], [3, 480, 4]],
                               max_tokens=1, dump=opts).dump_root  # fmt: skip
    w = open_workspace(tmp_path / "ws")
    try:
        run = ingest_dump(w, root)
        assert w.cursor().execute(
            "SELECT batched, reason FROM dump_axis_runs WHERE run_id = ?", [run]
        ).fetchone() == (False, "model.embed_tokens input ids are [8]")
        want = {
            ("model.embed_tokens", "input"): (1, "[tokens]"),
            ("model.layers.0.input_layernorm", "output"): (1, "[tokens, hidden]"),
            ("model.layers.0.self_attn.q_norm", "output"): (1, "[tokens, heads, head_dim]"),
            ("model.layers.0.self_attn.k_norm", "input"): (1, "[tokens, heads, head_dim]"),
        }
        for (module, io), (k, layout) in want.items():
            row = _row(w, run, module, io)
            a = axis_store.get(w, int(row.tensor_id))
            assert (a.token_dims, a.layout) == (k, layout), module
            t = query.load_tensor(w, int(row.tensor_id))
            if t.is_floating_point():
                m = t.float().numpy().reshape(8, -1)
                s = _stats(w, int(row.tensor_id))
                np.testing.assert_allclose(s.channel_absmax, np.abs(m).max(0), rtol=1e-6)
                assert len(s.token_absmax) == 8
    finally:
        w.close()
