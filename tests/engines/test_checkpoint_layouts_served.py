"""The reference engine serves every checkpoint layout: a fused checkpoint written by
transformers' save_pretrained gives transformers' own logits on that checkpoint; an AWQ
checkpoint serves exactly like a float checkpoint holding its numpy-dequantized weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from studio_backend.engines.reference.offline import run_offline
from tests.engines.test_oracle import PROMPTS, STEPS, TOL, hf_logits
from tests.models import quant_fixtures as qf


@pytest.fixture(scope="module")
def fused(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Qwen3MoeForCausalLM

    out = tmp_path_factory.mktemp("fused") / "model"
    model = Qwen3MoeForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model.save_pretrained(out, save_original_format=False, max_shard_size="200KB")
    assert (out / "model.safetensors.index.json").is_file()
    names = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.layers.1.mlp.experts.gate_up_proj" in names
    return out


def test_fused_sharded_checkpoint_matches_transformers(fused: Path) -> None:
    res = run_offline(fused, tp=2, prompts=PROMPTS, max_tokens=STEPS)
    for req, prompt in enumerate(PROMPTS):
        ref = hf_logits(fused, prompt + res.tokens[req])  # transformers on the same files
        for step, logits in enumerate(res.step_logits):
            row = res.step_requests[step].index(req)
            diff = (logits[row] - ref[len(prompt) - 1 + step]).abs().max().item()
            assert diff < TOL, f"request {req} step {step}: max abs diff {diff}"


def test_awq_serves_its_dequantized_weights(tiny_model: Path, tmp_path: Path) -> None:
    truth = qf.write_awq(tiny_model, tmp_path / "awq", group=32)
    dense = tmp_path / "dequantized"
    shutil.copytree(tiny_model, dense)
    w = load_file(str(dense / "model.safetensors"))
    w |= {n: torch.from_numpy(qf.dequant_int4(t).copy()) for n, t in truth.items()}
    save_file(w, str(dense / "model.safetensors"))
    a = run_offline(tmp_path / "awq", tp=1, prompts=PROMPTS, max_tokens=STEPS)
    b = run_offline(dense, tp=1, prompts=PROMPTS, max_tokens=STEPS)
    assert a.tokens == b.tokens
    for x, y in zip(a.step_logits, b.step_logits, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", ["w4a16-asym", "fp8-block"])
def test_compressed_tensors_checkpoint_serves_its_decompression(name: str, tmp_path: Path) -> None:
    # compressed-tensors wrote the checkpoint (tests/models/data); the float twin holds its own
    # decompress_model weights: served at tp=2 both must give the same logits, bit for bit.
    data = Path(__file__).parents[1] / "models" / "data"
    src = data / "ct_checkpoints" / name
    twin = tmp_path / "float"
    shutil.copytree(src, twin)
    cfg = json.loads((twin / "config.json").read_text())
    del cfg["quantization_config"]
    (twin / "config.json").write_text(json.dumps(cfg))
    stored = load_file(str(src / "model.safetensors"))
    decompressed = load_file(str(data / "ct_expected" / f"{name}.safetensors"))
    bases = {n.removesuffix(".weight") for n in decompressed}
    w = {n: t for n, t in stored.items() if n.rpartition(".")[0] not in bases} | decompressed
    save_file(w, str(twin / "model.safetensors"))
    prompts = [[1, 5, 9, 30, 2], [7, 3]]
    a = run_offline(src, tp=2, prompts=prompts, max_tokens=3)
    b = run_offline(twin, tp=2, prompts=prompts, max_tokens=3)
    assert a.tokens == b.tokens
    for x, y in zip(a.step_logits, b.step_logits, strict=True):
        assert torch.equal(x, y)
    assert a.step_logits[0].std(dim=-1).min() > 0  # not a degenerate model
