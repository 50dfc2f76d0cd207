"""Alignment rules, and a fault planted in one module of an otherwise identical run (different
TP layouts: TP=1 against TP=4) is found exactly there."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from studio_backend.cli import main
from studio_backend.compare import align as A
from studio_backend.compare.runs import compare_runs, load_matrix, locations
from studio_backend.dumps import synthetic as S
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.dumps.query import load_tensor

FAULT = (0, "model.layers.1.self_attn.o_proj", "output", 0)


def test_canonical_names_and_conventions() -> None:
    assert A.canonical("root.model.layers.3.mlp.experts") == "layers.3.mlp.experts"
    assert A.canonical("model.language_model.model.norm") == "norm"
    assert A.canonical("model") == "" and A.canonical("lm_head") == "lm_head"
    assert A.convention(["model.layers.0.self_attn.qkv_proj"]) == "fused"
    assert A.convention(["model.layers.0.self_attn.q_proj", "model.norm"]) == "split"
    assert A.convention(["model.norm"]) is None
    # kwargs that are positional elsewhere, ModelOutput fields and nested outputs
    assert A._index_key("experts", "input", -1, "hidden_states") == 0
    assert A._index_key("experts", "input", -1, "router_logits") == "kw:router_logits"
    assert A._index_key("", "output", 0, "0.last_hidden_state") == 0
    assert A._index_key("x", "output", 0, "0_1") == "0:0_1"


def test_forward_order() -> None:
    keys = [
        ("norm", "output", 0, None, 0),
        ("layers.1.input_layernorm", "output", 0, None, 0),
        ("layers.0.mlp", "output", 0, None, 0),
        ("layers.0.mlp.experts", "output", 0, None, 0),
        ("layers.0.mlp.gate", "output", 0, None, 0),
        ("layers.0.self_attn.o_proj", "input", 0, None, 0),
        ("layers.0.self_attn.qkv_proj", "output", 0, "q", 0),
        ("layers.0.self_attn.qkv_proj", "input", 0, None, 0),
        ("layers.0.input_layernorm", "output", 0, None, 0),
        ("embed_tokens", "output", 0, None, 0),
        ("", "output", 0, None, 0),
    ]
    got = [k[0] + ":" + k[1] for k in sorted(keys, key=A.order_key)]
    assert got == [
        "embed_tokens:output", "layers.0.input_layernorm:output", "layers.0.self_attn.qkv_proj:input",
        "layers.0.self_attn.qkv_proj:output", "layers.0.self_attn.o_proj:input",
        "layers.0.mlp.gate:output", "layers.0.mlp.experts:output", "layers.0.mlp:output",
        "layers.1.input_layernorm:output", "norm:output", ":output",
    ]  # fmt: skip


@pytest.fixture
def planted(tmp_path: Path, workspace):
    cfg = S.SynthConfig(layers=3, dense_layers=(0, 1, 2))  # no MoE: random partial sums
    truth = S.make_truth(cfg, [5, 1], seed=3)
    bad = copy.deepcopy(truth)
    rng = np.random.default_rng(9)
    bad[FAULT] = bad[FAULT] + 1e-3 * rng.standard_normal(bad[FAULT].shape).astype(np.float32)
    bad[FAULT][2] += 0.5  # token 2 parts most
    a = ingest_dump(workspace, S.write_msit(tmp_path / "a", cfg, truth, 1))
    b = ingest_dump(workspace, S.write_msit(tmp_path / "b", cfg, bad, 4))
    c = ingest_dump(workspace, S.write_msit(tmp_path / "c", cfg, truth, 4))
    return a, b, c, truth, bad


def test_planted_fault_is_found_exactly_there(planted, workspace) -> None:
    a, b, c, truth, bad = planted
    clean = compare_runs(workspace, a, c)
    assert clean.first is None  # TP=4 stitched equals TP=1: nothing to report
    assert float(clean.table["rel_diff"].max()) == 0.0
    res = compare_runs(workspace, a, b)
    f = res.first
    assert (f["step"], f["module"], f["io"], f["index"]) == (0, FAULT[1], "output", 0)
    assert res.table["diverged"].sum() == 1  # synthetic tensors are independent
    row = res.table.loc[f["row"]]
    # the metrics of that tensor equal numpy on the truth and the planted tensor
    x, y = truth[FAULT].astype(np.float64), bad[FAULT].astype(np.float64)
    rd = np.sum((x - y) ** 2) / (np.sum(x * x) + np.sum(y * y))
    assert row["rel_diff"] == pytest.approx(rd, rel=1e-12)
    cos = np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y))
    assert row["cosine"] == pytest.approx(cos, rel=1e-12)
    tok = res.per_token[f["row"]]["rel_diff"]
    assert int(np.argmax(tok)) == 2 and f["first_token"] == 0
    assert res.ranked.iloc[0]["module"] == FAULT[1]
    # qkv is compared whole (both fused): its parts are not compared twice, nothing unaligned
    assert not (res.table["part"].notna()).any()
    assert res.unaligned.empty


def test_cli_exit_codes_and_json(planted, workspace, capsys) -> None:
    a, b, c, _, _ = planted
    ws = str(workspace.root)
    workspace.close()
    assert main(["compare", a, c, "--workspace", ws]) == 0
    assert "no divergence" in capsys.readouterr().out
    assert main(["compare", a, b, "--workspace", ws, "--json", "--per-token"]) == 1
    out = json.loads(capsys.readouterr().out)
    f = out["first_divergence"]
    assert (f["module"], f["io"], f["index"], f["step"]) == (FAULT[1], "output", 0, 0)
    rec = next(t for t in out["tensors"] if t["label"] == f["label"])
    assert rec["diverged"] is True and len(rec["per_token"]["rel_diff"]) == 5
    assert out["ranked"][0]["module"] == FAULT[1]
    assert main(["compare", a, b, "--workspace", ws, "--modules", r"layers\.0\."]) == 0
    capsys.readouterr()
    assert main(["compare", a, "no-such-run", "--workspace", ws]) == 2
    assert "no-such-run" in capsys.readouterr().err
    assert main(["compare", a, b, "--workspace", ws, "--steps", "x"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert main(["compare", a, b, "--workspace", ws, "--modules", "("]) == 2
    assert "regex" in capsys.readouterr().err
    # a looser threshold than the fault: the runs agree
    assert main(["compare", a, b, "--workspace", ws, "--threshold", "0.5"]) == 0


def test_batched_locations_load_what_load_tensor_loads(planted, workspace) -> None:
    # measure() looks every pair's tensor up in one query; each side must be the very tensor
    # load_tensor reads (stitched from the store, or straight from its rank file), and a run
    # ingested over Ray is left to load_tensor (its files are on the node that holds them)
    a, b, *_ = planted
    al = A.align(workspace, a, b)
    ids = sorted({r.tensor_id for p in al.pairs for r in (p.a, p.b)})
    where = locations(workspace, ids)
    assert sorted(where) == ids
    for p in al.pairs:
        for r in (p.a, p.b):
            if not r.split:
                want = load_tensor(workspace, r.tensor_id)
                assert torch.equal(load_matrix(workspace, r, {}, where).flatten(), want.flatten())
    workspace.cursor().execute("INSERT INTO dump_cluster_runs VALUES (?, ?)", [a, "head:6379"])
    left = locations(workspace, ids)
    assert left and all(i in where for i in left)
    assert not {p.a.tensor_id for p in al.pairs} & set(left)


def test_an_inf_in_run_b_is_a_divergence_at_its_token(tmp_path: Path, workspace) -> None:
    # an fp16-style overflow: one element of one token is inf in B. Its rel_diff is NaN (inf /
    # inf), which must count as diverged (it used to read as 0, "agree"), at that token.
    cfg = S.SynthConfig(layers=2, dense_layers=(0, 1))
    truth = S.make_truth(cfg, [5], seed=4)
    bad = copy.deepcopy(truth)
    bad[FAULT][3, 7] = np.inf
    a = ingest_dump(workspace, S.write_msit(tmp_path / "a", cfg, truth, 1))
    b = ingest_dump(workspace, S.write_msit(tmp_path / "b", cfg, bad, 1))
    res = compare_runs(workspace, a, b, steps=[0], threshold=1e-9)
    f = res.first
    assert (f["module"], f["io"], f["first_token"], f["tokens_over"]) == (FAULT[1], "output", 3, 1)
    assert np.isnan(f["rel_diff"])
    row = res.table.loc[f["row"]]
    assert row["max_abs_error"] == np.inf and row["diverged"]
    assert res.token_first(0)[3] == f["label"]
    assert f["label"] in res.heatmap(0).index
    assert int(res.table["diverged"].sum()) == 1


def test_options_are_the_keywords(planted, workspace) -> None:
    from studio_backend.compare.runs import Options, compare_any
    from studio_backend.errors import InputError

    a, b, *_ = planted
    kw = {"steps": [0], "modules": r"layers\.1\.", "threshold": 1e-6}
    by_kw = compare_runs(workspace, a, b, **kw)
    by_opts = compare_any(workspace, a, b, Options(**kw))
    assert by_opts.first["label"] == by_kw.first["label"] and len(by_kw.table) == len(by_opts.table)
    assert (
        set(by_kw.table["step"]) == {0} and by_kw.table["module_a"].str.contains("layers.1.").all()
    )
    assert (by_kw.table["threshold"] == 1e-6).all()
    with pytest.raises(TypeError):
        compare_runs(workspace, a, b, Options(), steps=[0])
    with pytest.raises(InputError, match="threshold"):
        Options(threshold=-1.0)
    with pytest.raises(InputError, match="regex"):
        Options(modules="(")
