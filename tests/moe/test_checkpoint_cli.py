"""Checkpoint inspector (names, counts, partition plan) and the two CLI commands."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from studio_backend.cli import main
from studio_backend.errors import InputError
from studio_backend.models.create import create_model
from studio_backend.moe.checkpoint import inspect
from tests.moe import fixtures


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return create_model(tmp_path_factory.mktemp("ckpt") / "tiny", preset="tiny", seed=1)


def test_clean_checkpoint_and_plan_tp4_ep4(tiny) -> None:
    r = inspect(tiny, tp=4, ep=4)
    assert r["ok"] and r["missing"] == r["unexpected"] == []
    assert r["moe_layers"] == [1, 2] and r["dense_layers"] == [0]
    # tiny: vocab 512, hidden 64, 4 heads / 2 kv heads of 16, dense I 128, 8 experts of I 32
    assert r["params"]["experts"] == 3 * 32 * 64 * 8 * 2
    assert r["params"]["router"] == 8 * 64 * 2
    dev = r["plan"]["per_device"]
    assert [d["experts"] for d in dev] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # per device, by hand: emb+lm_head 2*128*64, attention 3*((1+2*1)*16*64 + 64*16) (kv head
    # replicated since tp > kv heads), norms 3*(2*64+2*16)+64, dense 3*32*64, router 2*8*64,
    # experts 2 layers * 2 experts * 3*32*64
    want = (
        2 * 128 * 64 + 3 * (3 * 16 * 64 + 64 * 16) + 544 + 3 * 32 * 64 + 1024 + 2 * 2 * 3 * 32 * 64
    )
    assert all(d["params"] == want and d["bytes"] == 4 * want for d in dev)


def test_plan_tp2_without_ep_splits_expert_intermediate(tiny) -> None:
    plan = inspect(tiny, tp=2, ep=1)["plan"]
    assert plan["expert_tp"] == 2
    ex = [d["by_category_bytes"]["experts"] // 4 for d in plan["per_device"]]
    assert ex == [3 * 16 * 64 * 8 * 2] * 2 and sum(ex) == 3 * 32 * 64 * 8 * 2
    with pytest.raises(InputError, match="num_attention_heads=4 is not divisible by tp=3"):
        inspect(tiny, tp=3, ep=1)


def test_broken_checkpoint_names_exact_tensors(tiny, tmp_path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny, bad)
    w = load_file(str(bad / "model.safetensors"))
    del w["model.layers.1.mlp.experts.3.up_proj.weight"]
    w["model.layers.1.mlp.experts.8.up_proj.weight"] = w[
        "model.layers.1.mlp.experts.2.up_proj.weight"
    ].clone()
    w["model.layers.2.self_attn.q_norm.weight"] = w["model.layers.2.self_attn.q_norm.weight"][
        :8
    ].clone()
    save_file(w, str(bad / "model.safetensors"))
    r = inspect(bad)
    assert r["missing"] == ["model.layers.1.mlp.experts.3.up_proj.weight"]
    assert r["unexpected"] == ["model.layers.1.mlp.experts.8.up_proj.weight"]
    assert r["wrong_shape"] == [
        {"name": "model.layers.2.self_attn.q_norm.weight", "expected": [16], "found": [8]}
    ]
    assert main(["inspect-checkpoint", str(bad), "--json"]) == 1


def test_cli_experts_json(tmp_path, capsys) -> None:
    lc = fixtures.sglang_stat(tmp_path / "rec.pt")
    ws = str(tmp_path / "ws")
    assert (
        main(["--workspace", ws, "experts", str(tmp_path / "rec.pt"), "--devices", "2", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)["sources"][0]
    assert out["source"] == "rec.pt" and out["kind"] == "sglang-stat"
    got = {(c["step"], c["layer"], c["expert"]): c["count"] for c in out["counts"]}
    assert got[(2, 3, 5)] == lc[2, 3, 5]
    assert [row["layer"] for row in out["layers"]] == [1, 2, 3]
    # a stored source by name shows the same without re-importing
    assert main(["--workspace", ws, "experts", "rec.pt", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["sources"][0]
    assert again["summary"] == out["summary"]


def test_cli_bad_input_is_one_line(tmp_path, capsys) -> None:
    (tmp_path / "x.pt").write_bytes(b"garbage")
    assert main(["--workspace", str(tmp_path / "ws"), "experts", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.pt" in err[0] and "not a readable torch.save file" in err[0]
