"""Synthetic checkpoints: config spellings, MoE rule, transformers loads them, outliers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio_backend.cli import main
from studio_backend.errors import InputError
from studio_backend.models.config import Qwen3MoeConfig, read_config
from studio_backend.models.create import OUTLIER_MAGNITUDE, create_model
from studio_backend.models.tokenizer import load_tokenizer


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
    """Massive values only in the embedding rows of the start and delimiter tokens, in two
    fixed channels (Sun et al. 2024); every other row stays ordinary."""
    info = json.loads((tiny / "studio_model.json").read_text())["outliers"]
    vocab = load_tokenizer(tiny).get_vocab()
    emb = load_file(str(tiny / "model.safetensors"))["model.embed_tokens.weight"].numpy()
    absx = np.abs(emb)
    rows = sorted(int(r) for r in np.nonzero(absx.max(axis=1) > 100)[0])
    assert rows == sorted(vocab[t] for t in ("<|im_start|>", ".", "Ċ"))
    assert absx[vocab["<|im_start|>"]].max() == pytest.approx(OUTLIER_MAGNITUDE)
    for r in rows:
        assert sorted(np.argsort(-absx[r])[:2].tolist()) == info["channels"]
        assert absx[r, info["channels"]].min() > 1000 * np.median(absx)
    assert np.median(absx) < OUTLIER_MAGNITUDE / 1000


def test_demo_model_looks_like_a_real_llm(tiny: Path) -> None:
    """transformers runs the checkpoint (an independent engine): hidden states vary along the
    tokens, the massive activations sit on the start / delimiter tokens in the planted channels
    in every layer, and top-2 routing of the router logits spreads over the experts unevenly."""
    from transformers import AutoModelForCausalLM

    from studio_backend.engines.demo import demo_prompt

    info = json.loads((tiny / "studio_model.json").read_text())["outliers"]
    ids = load_tokenizer(tiny).encode(demo_prompt()).ids
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True, output_router_logits=True)
    massive = [i for i, t in enumerate(ids) if str(t) in info["tokens"]]
    assert massive[0] == 0 and len(massive) >= 3
    ordinary = np.setdiff1d(np.arange(len(ids)), massive)
    for hs in out.hidden_states[:-1]:  # the residual stream before each layer and after the last
        x = hs[0].numpy()
        norms = np.linalg.norm(x[ordinary], axis=1)
        assert norms.std() / norms.mean() > 0.2
        absx = np.abs(x)
        assert sorted(np.nonzero(absx.max(axis=1) > 100)[0].tolist()) == massive
        big = absx[np.ix_(massive, info["channels"])]
        assert big.min() > 100 and big.min() > 1000 * np.median(absx)
    e = model.config.num_experts
    for logits in out.router_logits:
        if logits is None:
            continue
        top = np.argsort(-logits.float().numpy(), axis=1)[:, : model.config.num_experts_per_tok]
        counts = np.bincount(top.ravel(), minlength=e)
        assert (counts > 0).sum() >= 0.75 * e
        dev = counts.reshape(2, e // 2).sum(axis=1)  # two devices, contiguous experts
        assert 0 < dev.mean() / dev.max() < 1
        assert counts.max() < 0.5 * counts.sum()  # no expert takes everything


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
