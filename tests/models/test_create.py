"""Synthetic checkpoints: config spellings, MoE rule, transformers loads them, outliers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backend.cli import main
from backend.errors import InputError
from backend.models.config import Qwen3MoeConfig, read_config
from backend.models.create import OUTLIER_MAGNITUDE, create_model
from backend.models.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_model(tmp_path_factory.mktemp("m") / "tiny", preset="tiny", outliers=True)


def test_moe_layer_rule() -> None:
    base = dict(
        vocab_size=8,
        hidden_size=8,
        num_hidden_layers=6,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_experts=4,
    )
    cfg = Qwen3MoeConfig.from_dict({**base, "decoder_sparse_step": 2, "mlp_only_layers": [3]})
    assert cfg.moe_layers == [1, 5]
    cfg = Qwen3MoeConfig.from_dict({**base, "decoder_sparse_step": 1, "mlp_only_layers": [0]})
    assert cfg.moe_layers == [1, 2, 3, 4, 5]
    cfg = Qwen3MoeConfig.from_dict({**base, "num_experts": 0})
    assert cfg.moe_layers == []


def test_both_key_spellings(tiny: Path, tmp_path: Path) -> None:
    from transformers import Qwen3MoeConfig as HFConfig

    hub = read_config(tiny)
    assert hub.num_experts == 8 and hub.rope_theta == 1_000_000.0
    # transformers 5 saves rope_parameters (not rope_theta): read what it writes.
    HFConfig.from_pretrained(tiny).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "rope_parameters" in saved and "rope_theta" not in saved
    assert read_config(tmp_path) == hub
    raw = json.loads((tiny / "config.json").read_text())
    raw["num_local_experts"] = raw.pop("num_experts")
    raw["rope_parameters"] = {"rope_theta": raw.pop("rope_theta"), "rope_type": "default"}
    assert Qwen3MoeConfig.from_dict(raw) == hub


def test_transformers_loads_checkpoint(tiny: Path) -> None:
    from transformers import Qwen3MoeForCausalLM

    model, info = Qwen3MoeForCausalLM.from_pretrained(tiny, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    kinds = [type(layer.mlp).__name__ for layer in model.model.layers]
    assert kinds == ["Qwen3MoeMLP", "Qwen3MoeSparseMoeBlock", "Qwen3MoeSparseMoeBlock"]
    names = set(load_file(str(tiny / "model.safetensors")))
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in names
    assert "model.layers.0.mlp.gate_proj.weight" in names
    assert "model.layers.0.self_attn.q_norm.weight" in names


def test_deterministic_and_seeded(tmp_path: Path) -> None:
    a = load_file(str(create_model(tmp_path / "a", seed=3) / "model.safetensors"))
    b = load_file(str(create_model(tmp_path / "b", seed=3) / "model.safetensors"))
    c = load_file(str(create_model(tmp_path / "c", seed=4) / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["lm_head.weight"], c["lm_head.weight"])


def test_outlier_channels_are_massive(tiny: Path) -> None:
    info = json.loads((tiny / "studio_model.json").read_text())["outliers"]
    emb = load_file(str(tiny / "model.safetensors"))["model.embed_tokens.weight"]
    col_mean = emb.abs().mean(dim=0)
    top = sorted(col_mean.topk(2).indices.tolist())
    assert top == info["channels"]
    assert col_mean[top].min() > OUTLIER_MAGNITUDE * 0.99
    assert emb.abs().median() < OUTLIER_MAGNITUDE / 1000


def test_tokenizer_round_trip(tiny: Path) -> None:
    tok = load_tokenizer(tiny)
    text = "Tensor parallel experts route tokens."
    ids = tok.encode(text).ids
    assert max(ids) < read_config(tiny).vocab_size
    assert tok.decode(ids) == text


def test_cli_create_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    assert main(["model", "create", "--out", str(out), "--layers", "2"]) == 0
    assert read_config(out).num_hidden_layers == 2
    assert main(["model", "create", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(InputError):
        create_model(tmp_path / "x", preset="huge")
