"""The checkpoint reader and inspector on a tiny Qwen3-MoE checkpoint quantized in numpy with
AutoAWQ GEMM and AutoGPTQ v1 packing (tests/models/independent_quant_fixtures.py, written from
the originals); expected weights are that module's own numpy dequantization."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from studio_backend.models.checkpoint_reader import open_checkpoint
from tests.models import independent_quant_fixtures as fx

REPO = Path(__file__).resolve().parents[2]

VARIANTS = {
    "awq": dict(method="awq"),
    "awq-sharded": dict(method="awq", shards=2),
    "gptq-sym": dict(method="gptq", sym=True, desc_act=False),
    "gptq-desc-act-asym": dict(method="gptq", sym=False, desc_act=True, shards=3),
    "gptq-sym-desc-act": dict(method="gptq", sym=True, desc_act=True),
    "gptq-quantize-config-json": dict(method="gptq", sym=True, config_in="sidecar"),
    "awq-quant-config-json": dict(method="awq", config_in="sidecar"),
    "gptq-no-checkpoint-format": dict(
        method="gptq", sym=False, desc_act=True, drop_keys=("checkpoint_format",)
    ),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def ckpt(request, tmp_path_factory) -> tuple[str, fx.Fixture]:
    path = tmp_path_factory.mktemp(request.param)
    return request.param, fx.write_checkpoint(path, **VARIANTS[request.param])


def test_packers_round_trip_through_the_originals_unpacking():
    """The fixture's packers against AutoAWQ's / AutoGPTQ's own unpacking (oracle self-check)."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (64, 96)).astype(np.float32)
    for method, act in (("awq", None), ("gptq", None), ("gptq", rng.permutation(96))):
        qz = fx.quantize(w, 32, sym=False, act_order=act)
        if method == "awq":
            q, z = fx.unpack_awq(fx.pack_awq(qz))
        else:
            q, z = fx.unpack_gptq(fx.pack_gptq(qz))
        np.testing.assert_array_equal(q, qz.q)
        np.testing.assert_array_equal(z, qz.z)
    # nibble 1 of AWQ word 0 is column 2 (order [0, 2, 4, 6, 1, 3, 5, 7])
    qz = fx.quantize(w[:8, :32], 32, sym=False, act_order=None)
    qz.q[:] = 0
    qz.q[2, 0] = 5
    assert int(fx.pack_awq(qz)["qweight"][0, 0]) == 5 << 4
    # GPTQ: value i of word j is input row 8j + i; zeros stored minus one
    qz.q[:] = 0
    qz.q[0, 9] = 3
    assert int(fx.pack_gptq(qz)["qweight"][1, 0]) == 3 << 4


def test_dequantized_weights_equal_numpy_exactly(ckpt):
    name, fix = ckpt
    reader = open_checkpoint(fix.path)
    for hub, want in fix.expected.items():
        got = reader.get(hub)
        assert tuple(got.shape) == want.shape, (name, hub)
        np.testing.assert_array_equal(got.double().numpy(), want, err_msg=f"{name}: {hub}")


def test_dequantized_weights_within_quantization_error(ckpt):
    _, fix = ckpt
    reader = open_checkpoint(fix.path)
    for hub, w in fix.weights.items():
        err = np.abs(reader.get(hub).double().numpy() - w)
        assert (err <= fix.scales[hub]).all(), hub  # <= one step (half a step unless clamped)
        assert np.median(err / fix.scales[hub]) < 0.5


def test_expert_names_as_the_hub_spells_them(ckpt):
    _, fix = ckpt
    reader = open_checkpoint(fix.path)
    hub = "model.layers.1.mlp.experts.3.down_proj.weight"
    assert tuple(reader.get(hub).shape) == (fx.HIDDEN, fx.MOE_INTER)
    np.testing.assert_array_equal(reader.get(hub).double().numpy(), fix.expected[hub])


def test_inspect_checkpoint_reports_ok_and_layout(ckpt):
    name, fix = ckpt
    cmd = [
        sys.executable,
        "-m",
        "studio_backend.cli",
        "inspect-checkpoint",
        str(fix.path),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    variant = VARIANTS[name]
    method, shards = variant["method"], variant.get("shards", 1)
    layout = report["layout"]
    assert layout["quantization"] == method
    assert layout["experts"] == "per-expert"
    # 2 layers x (4 attention + 4 experts x 3) projections; embeddings, lm_head, final norm and
    # per layer 2 norms, q_norm, k_norm, router stay float
    assert layout["forms"] == {method: 32, "float": 13}
    assert (layout["files"], layout["index"]) == (shards, shards > 1)
    sidecar = "quant_config.json" if method == "awq" else "quantize_config.json"
    in_config = variant.get("config_in", "config") == "config"
    assert Path(layout["quant_config"]).name == ("config.json" if in_config else sidecar)


@pytest.mark.parametrize("method", ["awq", "gptq"])
def test_inspect_checkpoint_names_a_missing_tensor(tmp_path: Path, method: str):
    """The contrast to ``ok``: one expert's zero points left out."""
    from safetensors.numpy import load_file, save_file

    fix = fx.write_checkpoint(tmp_path / method, method)
    shard = fix.path / "model.safetensors"
    tensors = load_file(str(shard))
    missing = "model.layers.1.mlp.experts.2.up_proj.qzeros"
    del tensors[missing]
    save_file(tensors, str(shard), metadata={"format": "pt"})
    cmd = [
        sys.executable,
        "-m",
        "studio_backend.cli",
        "inspect-checkpoint",
        str(fix.path),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert missing in proc.stdout
