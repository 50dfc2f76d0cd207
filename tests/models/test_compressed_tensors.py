"""Checkpoints written by compressed-tensors itself (tests/models/data/make_compressed_tensors.py:
FP8 per channel / per tensor / per block, W4A16 pack-quantized symmetric and asymmetric). The
reader must give exactly compressed-tensors' own decompression of every quantized weight; the
inspector must accept the files and name the layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio_backend.models.checkpoint_reader import open_checkpoint
from studio_backend.moe.checkpoint import inspect

DATA = Path(__file__).parent / "data" / "ct_checkpoints"
KINDS = {"fp8-channel": "fp8", "fp8-tensor": "fp8", "fp8-block": "fp8",
         "w4a16-sym": "ct-int4", "w4a16-asym": "ct-int4"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(KINDS))
def test_reader_equals_compressed_tensors_decompression(name: str) -> None:
    expected = load_file(str(DATA.parent / "ct_expected" / f"{name}.safetensors"))
    assert len(expected) == 11  # q/k/v/o of 2 layers + the dense MLP of layer 0
    ck = open_checkpoint(DATA / name)
    for weight, want in expected.items():
        np.testing.assert_array_equal(ck.get(weight).numpy(), want.numpy(), err_msg=weight)
    # the router and experts stay float (not nn.Linear under transformers 5 / ignored)
    assert ck.get("model.layers.1.mlp.experts.3.up_proj.weight").dtype == torch.float32


@pytest.mark.parametrize("name", sorted(KINDS))
def test_inspect_compressed_tensors(name: str) -> None:
    r = inspect(DATA / name)
    assert r["ok"], (r["missing"][:5], r["unexpected"][:5], r["wrong_shape"][:5])
    assert r["layout"]["quantization"] == KINDS[name]
    assert r["layout"]["forms"][KINDS[name]] == 11
    # logical parameters, whatever the packing: q 32x32, k/v 16x32, o 32x32 per layer, dense
    # gate/up/down 32x32
    assert r["params"]["attention"] == 2 * (2 * 32 * 32 + 2 * 16 * 32)
    assert r["params"]["dense_mlp"] == 3 * 32 * 32
