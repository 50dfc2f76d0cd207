"""`studio trace modules` on a transformers checkpoint and `studio profile ...` end to end."""

from __future__ import annotations

import json

import pytest
import torch

from studio_backend.cli import main
from studio_backend.trace.module_tracer import counts_by_class, trace_modules
from tests.trace.fixtures import GPU_EXPECTED, write_kineto_gpu


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, vocab_size=128, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("qwen3")
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    return out


def test_trace_modules_on_a_transformers_model(workspace_dir, qwen3_dir, capsys) -> None:
    assert main(["trace", "modules", "--model", str(qwen3_dir), "--prompt", "Hello"]) == 0
    text = capsys.readouterr().out
    # oracle: the same model traced in-process (no tokenizer: the 5 prompt bytes are the ids)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(qwen3_dir)).eval()
    ids = torch.tensor([[b % 128 for b in b"Hello"]])
    with trace_modules(model) as t, torch.no_grad():
        model(input_ids=ids)
    counts = dict(counts_by_class(t.calls))
    assert counts["Qwen3DecoderLayer"] == 2
    assert counts["Linear"] == 15 and counts["Qwen3RMSNorm"] == 9
    for cls, n in counts.items():
        assert f"  • {cls}: {n}\n" in text
    assert " 1. [Qwen3RMSNorm] input_layernorm\n     Input:  (1, 5, 32)\n" in text
    assert "[Linear] q_proj\n     Input:  (1, 5, 32)\n     Output: (1, 5, 32)" in text
    assert main(["trace", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["n_calls"] == len(t.calls)


def test_profile_ingest_prints_top_json(workspace_dir, tmp_path, capsys) -> None:
    path = write_kineto_gpu(tmp_path / "gpu.json")
    assert main(["profile", "import", str(path), "--top", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [
        "paged_attention_v2_kernel",
        "sm90_xmma_gemm_bf16bf16_bf16f32",
    ]
    assert rows[0]["calls"] == 2 and rows[0]["total_us"] == pytest.approx(70.0)
    assert rows[0]["avg_us"] == pytest.approx(35.0)
    total = sum(d for *_, d in GPU_EXPECTED) + 11.0 + 30.0 + 4.0 + 1.5
    assert rows[0]["share"] == pytest.approx(70.0 / total)
    assert main(["profile", "list", "--json"]) == 0
    pid = json.loads(capsys.readouterr().out)[0]["profile_id"]
    assert main(["profile", "show", pid, "unattributed", "--json"]) == 0
    reasons = json.loads(capsys.readouterr().out)
    assert {r["reason"]: r["calls"] for r in reasons} == {
        "CUDA graph replay (3 kernels share correlation 508)": 3,
        "no launch event (correlation 999)": 1,
    }


def test_profile_ingest_bad_file_is_one_line(workspace_dir, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"traceEvents": [{"ph": "X", "name": "a", "ts": 1, "dur": 2}, {"ph"')
    assert main(["profile", "ingest", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "truncated or malformed" in err


def test_custom_family_table(workspace_dir, tmp_path, capsys) -> None:
    path = write_kineto_gpu(tmp_path / "gpu.json")
    assert main(["profile", "ingest", str(path), "--json"]) == 0
    capsys.readouterr()
    assert main(["profile", "list", "--json"]) == 0
    pid = json.loads(capsys.readouterr().out)[0]["profile_id"]
    table = tmp_path / "fam.json"
    table.write_text(json.dumps([["paged", "paged_attention"], ["xmma", "xmma"]]))
    assert main(["profile", "show", pid, "families", "--families", str(table), "--json"]) == 0
    rows = {r["family"]: r["calls"] for r in json.loads(capsys.readouterr().out)}
    # paged_attention_v2_kernel x2 + reduce x1; gemm x2 (one in the graph); the rest other
    assert rows == {"paged": 3, "xmma": 2, "other": 6}
    table.write_text('[["bad", "("]]')
    assert main(["profile", "show", pid, "families", "--families", str(table)]) == 2
    assert "bad regex" in capsys.readouterr().err
