"""On a CUDA machine: the compiled kernels (not the interpreter) against the oracle at
Qwen3-30B-A3B shapes, and CUDA-graph capture of the fused path. Skipped without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SCRIPT = """
import json, torch
from studio_kernels.experts import random_experts, fuse_experts
from studio_kernels.oracle import moe_oracle, relative_error
from studio_kernels.reference import moe_reference
from studio_kernels.routing import make_routing
from studio_kernels.triton_moe import moe_fused_triton
from studio_backend.bench.timing import time_calls
awq = random_experts(128, 2048, 768, 128, seed=0, device="cuda")
fused = fuse_experts(awq)
out = {}
for b in (1, 4, 8):
    ids, w = make_routing(b, 8, 128, "uniform", seed=b)
    x = torch.randn((b, 2048)).bfloat16()
    oracle = moe_oracle(x, ids, w, awq)
    x, ids, w = x.cuda(), ids.cuda(), w.cuda()
    out[b] = {
        "fused": relative_error(moe_fused_triton(x, ids, w, fused), oracle),
        "reference": relative_error(moe_reference(x, ids, w, awq), oracle),
    }
t = time_calls([lambda: moe_fused_triton(x, ids, w, fused, validate=False)], "cuda", reps=5)
print(json.dumps({"errors": out, "mode": t.mode}))
"""


def test_compiled_kernels_on_gpu() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for errs in result["errors"].values():
        assert errs["fused"] < 1e-2 and errs["reference"] < 1e-2
    assert result["mode"] == "cuda-graph"
