"""Seed 003's module trace on the real vLLM: per rank, per step, and `studio trace modules`.

Oracle: the model's config (3 layers, layer 0 dense, 4 heads / 2 KV heads of 32, hidden 128,
8 experts) gives the call counts and every sharded shape independently of vLLM.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import torch

from tests.engines.real_vllm.conftest import PROMPT_IDS

pytestmark = [pytest.mark.real_vllm, pytest.mark.slow, pytest.mark.xdist_group("real_vllm")]

LAYERS, HEADS, KV_HEADS, D, HIDDEN, EXPERTS, INTER = 3, 4, 2, 32, 128, 8, 256
# one forward: 3 decoder layers (each: 2 norms + q/k norm), final norm, 3 o_proj + 1 down_proj
COUNTS = {
    "Qwen3MoeForCausalLM": 1, "VocabParallelEmbedding": 1, "Qwen3MoeDecoderLayer": LAYERS,
    "RMSNorm": LAYERS * 4 + 1, "Qwen3MoeAttention": LAYERS, "QKVParallelLinear": LAYERS,
    "RotaryEmbedding": LAYERS, "Attention": LAYERS, "RowParallelLinear": LAYERS + 1,
    "Qwen3MoeMLP": 1, "MergedColumnParallelLinear": 1, "SiluAndMul": 1,
    "Qwen3MoeSparseMoeBlock": LAYERS - 1, "MoERunner": LAYERS - 1, "GateLinear": LAYERS - 1,
}  # fmt: skip


def _calls(server, rank: int, step: int) -> list[dict]:
    return torch.load(server.trace_dir / f"calls_rank{rank}_step{step}.pt", weights_only=True)


def test_trace_per_rank_and_step(real_servers) -> None:
    for tp, s in real_servers.items():
        kv_r = max(1, KV_HEADS // tp)
        for step, tokens in ((0, len(PROMPT_IDS)), (1, 1)):
            for rank in range(tp):
                calls = _calls(s, rank, step)
                assert dict(Counter(c["module_class"] for c in calls)) == COUNTS
                by_name = {c["module"]: c for c in calls}
                qkv = by_name["model.layers.1.self_attn.qkv_proj"]
                assert qkv["in_shapes"] == [[tokens, HIDDEN]]
                assert qkv["out_shapes"] == [[tokens, (HEADS // tp + 2 * kv_r) * D]]
                parent = calls[qkv["parent_seq"]]
                assert parent["module"] == "model.layers.1.self_attn"
                attn = by_name["model.layers.1.self_attn.attn"]
                assert attn["in_shapes"] == [
                    [tokens, HEADS // tp * D], [tokens, kv_r * D], [tokens, kv_r * D]
                ]  # fmt: skip
                act = by_name["model.layers.0.mlp.act_fn"]
                assert act["in_shapes"] == [[tokens, 2 * INTER // tp]]
                assert act["out_shapes"] == [[tokens, INTER // tp]]
                gate = next(c for c in calls if c["module_class"] == "GateLinear")
                assert gate["out_shapes"][0] == [tokens, EXPERTS]
                # the router runs INSIDE the experts (MoERunner), not beside them
                assert calls[gate["parent_seq"]]["module_class"] == "MoERunner"
                assert calls[0]["module_class"] == "Qwen3MoeForCausalLM"


def test_cli_trace_modules_on_real_vllm(real_vllm_python, real_model, tmp_path, monkeypatch):
    from studio_backend.workspace import open_workspace
    from tests.launch.conftest import free_port

    ws_dir = tmp_path / "ws"
    done = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(ws_dir), "trace", "modules",
         "--engine", "vllm", "--model", str(real_model), "--tp", "2", "--step", "1",
         "--prompt", "Tensor parallel inference", "--layer", "1", "--port", str(free_port()),
         "--python", real_vllm_python],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Module call counts:\n  • RMSNorm: 13\n" in out
    assert " 3. [QKVParallelLinear] qkv_proj\n     Input:  (1, 128)\n     Output: (1, 128)\n" in out
    ws = open_workspace(ws_dir)
    try:
        names = [r[0] for r in ws.cursor().execute(
            "SELECT name FROM trace_runs ORDER BY name").fetchall()]  # fmt: skip
        n_calls = ws.cursor().execute("SELECT DISTINCT n_calls FROM trace_runs").fetchall()
    finally:
        ws.close()
    assert names == [
        f"{real_model.name} (vLLM tp=2, rank 0, step 1)",
        f"{real_model.name} (vLLM tp=2, rank 1, step 1)",
    ]
    assert n_calls == [(sum(COUNTS.values()),)]

    # The Trace page shows the stored real-vLLM traces and offers the engine in its form.
    from streamlit.testing.v1 import AppTest

    from studio_ui.navigation import ROOT

    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws_dir))
    at = AppTest.from_file(str(ROOT / "app_pages/trace.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert "vllm" in at.selectbox(key="trace_engine").options
    labels = at.selectbox(key="trace_id").options
    assert any("(vLLM tp=2, rank 1, step 1)" in x for x in labels), labels
    counts = at.dataframe[0].value
    assert dict(zip(counts["module_class"], counts["calls"], strict=True))["MoERunner"] == 2


def test_cli_profile_run_on_real_vllm(real_vllm_python, real_model, tmp_path) -> None:
    """vLLM's own torch profiler, modules annotated by the plugin: one profile per rank."""
    from studio_backend.trace import analysis
    from studio_backend.workspace import open_workspace
    from tests.launch.conftest import free_port

    ws_dir = tmp_path / "ws"
    done = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(ws_dir), "profile", "run",
         "--engine", "vllm", "--model", str(real_model), "--tp", "2", "--max-tokens", "2",
         "--prompt", "Tensor parallel inference", "--port", str(free_port()),
         "--python", real_vllm_python, "--json"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    ws = open_workspace(ws_dir)
    try:
        rows = ws.cursor().execute("SELECT profile_id, name FROM profiles ORDER BY name").fetchall()
        ranks = [(pid, name) for pid, name in rows if "_rank" in name]
        assert [name.split("(")[-1] for _, name in ranks] == [
            "vLLM tp=2, dp0_pp0_tp0_dcp0_ep0_rank0)",
            "vLLM tp=2, dp0_pp0_tp1_dcp0_ep1_rank1)",
        ]
        expected = {f"model.layers.{i}.self_attn.{m}" for i in range(LAYERS)
                    for m in ("qkv_proj", "attn", "o_proj")}  # fmt: skip
        expected |= {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.experts",
                     "model.layers.2.mlp.experts"}  # fmt: skip
        for pid, _ in ranks:
            modules = set(analysis.by_module(ws, pid)["module"])
            assert expected <= modules, sorted(expected - modules)
    finally:
        ws.close()
