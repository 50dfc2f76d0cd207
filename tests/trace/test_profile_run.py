"""`studio profile run` on the project's tiny Qwen3-MoE checkpoint: its ops attribute to layers."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from studio_backend.cli import main
from studio_backend.trace import analysis
from studio_backend.trace.naming import layer_of
from studio_backend.workspace import open_workspace


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    from studio_backend.models.create import create_model

    return create_model(tmp_path_factory.mktemp("m") / "tiny", preset="tiny", seed=0)


def _profile_args(model, max_tokens: int) -> list[str]:
    # --top 1000: every module is printed, so no layer drops out of the list by timing.
    return ["profile", "run", "--model", str(model), "--max-tokens", str(max_tokens), "--json",
            "--top", "1000"]  # fmt: skip


def test_profile_run_attributes_ops_to_layers(workspace_dir, tiny_moe, capsys) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    args = _profile_args(tiny_moe, 2) + ["--engine", "transformers"]
    assert main(args) == 0
    modules = json.loads(capsys.readouterr().out)
    ws = open_workspace(workspace_dir)
    try:
        pid = analysis.list_profiles(ws)["profile_id"].iloc[0]
        attr = analysis.attribution(ws, pid)
        per_layer = analysis.per_layer(ws, pid)
    finally:
        ws.close()
    cfg = AutoConfig.from_pretrained(str(tiny_moe))
    model = AutoModelForCausalLM.from_config(cfg)
    linears = {n for n, m in model.named_modules() if type(m).__name__ == "Linear"}
    # oracle: two forward passes (prefill + one decode step) -> each Linear module ran
    # aten::linear exactly twice, and each is attributed to that module and its layer
    lin = attr[attr["name"] == "aten::linear"]
    counts = lin.groupby("module").size().to_dict()
    assert {m: counts.get(m, 0) for m in linears} == {m: 2 for m in linears}
    for row in lin[lin["module"].isin(linears)].itertuples():
        assert (None if pd.isna(row.layer) else int(row.layer)) == layer_of(row.module)
    # every decoder layer has time, and the module table shows the layers' attention blocks
    assert set(per_layer["layer"].dropna().astype(int)) == set(range(cfg.num_hidden_layers))
    names = {m["module"] for m in modules}
    assert {f"model.layers.{i}.self_attn" for i in range(cfg.num_hidden_layers)} <= names


@pytest.mark.parametrize(
    ("name", "tp", "problem"),
    [
        ("trace.json", 2, "--tp 2 writes one trace per rank: give a directory"),
        ("a_file", 1, "exists and is not a directory (--out takes a directory)"),
    ],
)
def test_profile_out_errors_name_the_path(
    workspace_dir, tiny_moe, capsys, tmp_path, name, tp, problem
) -> None:
    bad = tmp_path / name
    if name == "a_file":
        bad.write_text("x")
    args = ["profile", "run", "--model", str(tiny_moe), "--tp", str(tp), "--out", str(bad)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and problem in err
    assert "Traceback" not in err


def test_transformers_profile_refuses_tp(workspace_dir, tiny_moe, capsys) -> None:
    args = ["profile", "run", "--model", str(tiny_moe), "--tp", "2", "--engine", "transformers"]
    assert main(args) == 2
    assert "--tp 1" in capsys.readouterr().err


def test_reference_engine_tp2_profiles_every_rank(
    workspace_dir, tiny_moe, capsys, tmp_path
) -> None:
    from studio_backend.models.config import read_config

    out = tmp_path / "traces" / "tp2"  # --out DIR: created, and every rank's trace lands in it
    args = ["profile", "run", "--model", str(tiny_moe), "--tp", "2", "--max-tokens", "2",
            "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert f"(Chrome trace {out / 'trace_rank0.json'})" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["trace_rank0.json", "trace_rank1.json"]
    cfg = read_config(tiny_moe)
    ws = open_workspace(workspace_dir)
    try:
        profiles = analysis.list_profiles(ws)
        assert sorted(profiles["name"]) == [
            f"tiny (reference engine tp=2, rank {r})" for r in range(2)
        ]
        assert sorted(profiles["source"]) == [str(out / f"trace_rank{r}.json") for r in range(2)]
        for pid in profiles["profile_id"]:
            attr = analysis.attribution(ws, pid)
            lin = attr[attr["name"] == "aten::linear"]
            counts = lin.groupby("module").size().to_dict()
            # every rank runs its shard of each projection once per forward (2 forwards)
            for i in range(cfg.num_hidden_layers):
                for m in ("self_attn.qkv_proj", "self_attn.o_proj"):
                    assert counts[f"model.layers.{i}.{m}"] == 2
            assert set(analysis.per_layer(ws, pid)["layer"].dropna().astype(int)) == set(
                range(cfg.num_hidden_layers)
            )
    finally:
        ws.close()


def test_reference_engine_profile_attributes_ops_to_layers(
    workspace_dir, tiny_moe, capsys, tmp_path
) -> None:
    from studio_backend.engines.reference import parallel
    from studio_backend.engines.reference.model import Qwen3MoeForCausalLM
    from studio_backend.models.config import read_config

    out = tmp_path / "prof"
    out.mkdir()  # an existing directory: the trace goes inside it
    args = _profile_args(tiny_moe, 3) + ["--out", str(out)]
    assert main(args) == 0  # --engine reference is the default
    modules = {m["module"] for m in json.loads(capsys.readouterr().out)}
    assert [p.name for p in out.iterdir()] == ["trace.json"]
    ws = open_workspace(workspace_dir)
    try:
        profiles = analysis.list_profiles(ws)
        assert profiles["source"].tolist() == [str(out / "trace.json")]
        pid = profiles["profile_id"].iloc[0]
        attr = analysis.attribution(ws, pid)
        per_layer = analysis.per_layer(ws, pid)
    finally:
        ws.close()
    # oracle: the engine's own module tree (vLLM names); every parallel linear calls F.linear
    # once per forward, and 3 tokens = prefill + 2 decode steps = 3 forwards (warm-up excluded)
    cfg = read_config(tiny_moe)
    parallel.init_group(0, 1, parallel.free_port())
    try:
        model = Qwen3MoeForCausalLM(cfg)
    finally:
        parallel.destroy()
    kinds = {"QKVParallelLinear", "RowParallelLinear", "MergedColumnParallelLinear"}
    kinds.add("ReplicatedLinear")
    linears = {n for n, m in model.named_modules() if type(m).__name__ in kinds}
    assert {f"model.layers.{i}.self_attn.qkv_proj" for i in range(cfg.num_hidden_layers)} <= linears
    lin = attr[attr["name"] == "aten::linear"]
    counts = lin.groupby("module").size().to_dict()
    assert {m: counts.get(m, 0) for m in linears} == {m: 3 for m in linears}
    for row in lin[lin["module"].isin(linears)].itertuples():
        assert int(row.layer) == layer_of(row.module)
    assert set(per_layer["layer"].dropna().astype(int)) == set(range(cfg.num_hidden_layers))
    assert {f"model.layers.{i}.self_attn.qkv_proj" for i in range(cfg.num_hidden_layers)} <= modules


def test_trace_modules_on_reference_engine_every_rank(workspace_dir, tiny_moe, capsys) -> None:
    from studio_backend.models.config import read_config
    from studio_backend.trace import traces

    prompt = "Tensor parallel shards"
    for tp in (1, 2):
        args = ["trace", "modules", "--model", str(tiny_moe), "--engine", "reference"]
        assert main([*args, "--tp", str(tp), "--prompt", prompt]) == 0
    assert "QKVParallelLinear" in capsys.readouterr().out
    cfg = read_config(tiny_moe)
    hd, heads, kv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    from studio_backend.models.tokenizer import load_tokenizer

    n_tok = len(load_tokenizer(tiny_moe).encode(prompt).ids)
    ws = open_workspace(workspace_dir)
    try:
        runs = traces.list_traces(ws)
        assert list(runs["name"]) == [
            "tiny (reference engine)",
            "tiny (reference engine tp=2, rank 0)",
            "tiny (reference engine tp=2, rank 1)",
        ]
        by_name = dict(zip(runs["name"], runs["trace_id"], strict=True))
        # oracle: vLLM's QKV sharding from config.json (REFERENCE.md 2), one prefill of n_tok
        for name, tp in [("tiny (reference engine)", 1)] + [
            (f"tiny (reference engine tp=2, rank {r})", 2) for r in range(2)
        ]:
            df = traces.calls(ws, by_name[name], layer=0)
            qkv = df[df["module"] == "model.layers.0.self_attn.qkv_proj"].iloc[0]
            width = (heads // tp + 2 * max(1, kv // tp)) * hd
            assert json.loads(qkv["out_shapes"])[0] == [n_tok, width]
            o = df[df["module"] == "model.layers.0.self_attn.o_proj"].iloc[0]
            assert json.loads(o["in_shapes"])[0] == [n_tok, heads // tp * hd]
        rank0 = traces.calls(ws, by_name["tiny (reference engine tp=2, rank 0)"])
        rank1 = traces.calls(ws, by_name["tiny (reference engine tp=2, rank 1)"])
        assert list(rank0["module"]) == list(rank1["module"])  # same call order on every rank
    finally:
        ws.close()
