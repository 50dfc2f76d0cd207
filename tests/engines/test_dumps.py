"""Real msit_llm and msprobe dumps at tp=2: exact folder/file names, and the TP facts readers
rely on: row-parallel outputs replicated; in the default (current vLLM) layout the experts output
already reduced, the router dumped as mlp.experts.gate, one rotary_emb for every layer rotating
in place; in the fused_moe layout FusedMoE partial sums adding up to the block output."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from studio_backend.engines.reference.dumping import DumpOptions
from studio_backend.engines.reference.offline import OfflineResult, run_offline
from studio_backend.models.config import read_config

pytest.importorskip("msit_llm")
PROMPTS = [[11, 57, 203, 9, 100], [3, 480, 4]]
T0 = 8  # prefill tokens of step 0 (flattened)


def load(path: Path) -> torch.Tensor:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def msit_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> OfflineResult:
    opts = DumpOptions(
        tool="msit",
        dump_path=tmp_path_factory.mktemp("msit"),
        token_range=[0, 1],
        mode=["module", "api"],
        api_list=["npu_kronecker_quant"],
    )
    return run_offline(tiny_model, tp=2, prompts=PROMPTS, max_tokens=3, dump=opts)


def expected_msit_modules(model_dir: Path, layout: str = "vllm") -> set[str]:
    cfg = read_config(model_dir)
    last = cfg.num_hidden_layers - 1
    names = {
        "root",
        "root.model",
        "root.model.embed_tokens",
        "root.model.norm",
        "root.logits_processor",
    }
    for i in range(cfg.num_hidden_layers):
        p = f"root.model.layers.{i}"
        names |= {
            p,
            f"{p}.input_layernorm",
            f"{p}.post_attention_layernorm",
            f"{p}.self_attn",
            f"{p}.mlp",
        }
        names |= {f"{p}.self_attn.{m}" for m in ("qkv_proj", "o_proj", "q_norm", "k_norm", "attn")}
        # vllm: ONE rotary_emb for all layers, named by msit after the last path it visits
        if layout == "fused_moe" or i == last:
            names.add(f"{p}.self_attn.rotary_emb")
        if cfg.is_moe_layer(i):
            # vllm: GateLinear registered as mlp.gate and mlp.experts.gate: msit keeps the last
            gate = "mlp.experts.gate" if layout == "vllm" else "mlp.gate"
            names |= {f"{p}.{gate}", f"{p}.mlp.experts", f"{p}.mlp.experts.npu_kronecker_quant"}
        else:
            names |= {f"{p}.mlp.gate_up_proj", f"{p}.mlp.down_proj", f"{p}.mlp.act_fn"}
    return names


def test_msit_layout(msit_run: OfflineResult, tiny_model: Path) -> None:
    root = msit_run.dump_root
    assert re.fullmatch(r"msit_dump_\d{8}_\d{6}", root.name)
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "ranks.json", "torch_tensors"]
    ranks = json.loads((root / "ranks.json").read_text())
    folders = sorted(p.name for p in (root / "torch_tensors").iterdir())
    assert sorted(ranks) == folders and sorted(ranks.values()) == [0, 1]
    assert all(re.fullmatch(r"cpu_\d+", f) for f in folders)
    assert json.loads((root / "config.json").read_text()) == json.loads(
        (tiny_model / "config.json").read_text()
    )
    expected = expected_msit_modules(tiny_model)
    for folder in folders:
        rank_dir = root / "torch_tensors" / folder
        # max_tokens=3 runs steps 0..2; token_range=[0, 1] dumps only the first two.
        assert sorted(p.name for p in rank_dir.iterdir()) == ["0", "1", "model_tree.json"]
        for step in ("0", "1"):
            assert {p.name for p in (rank_dir / step).iterdir()} == expected
        s0 = rank_dir / "0"

        def files(m: str, s0: Path = s0) -> list[str]:
            return sorted(p.name for p in (s0 / m).iterdir())

        assert files("root.model.layers.0.self_attn.qkv_proj") == ["input_0.pth", "output_0.pth"]
        assert files("root.model.layers.0") == [
            "input_0.pth",
            "input_1.pth",
            "output_0.pth",
            "output_1.pth",
        ]
        assert files("root.model.layers.1.mlp.experts") == ["output.pth"]  # kwargs: no inputs
        assert files("root.model.layers.1.self_attn") == ["output.pth"]
        assert files("root.model.layers.1.mlp.experts.npu_kronecker_quant") == [
            "input_0.pth",
            "input_1.pth",
            "input_2.pth",
            "output_0.pth",
            "output_1.pth",
        ]
        assert files("root.model.layers.1.mlp.experts.gate") == ["input_0.pth", "output_0.pth"]
        assert files("root") == ["output.pth"]
        # Shapes: tiny has 4 heads, 2 KV heads, head_dim 16 -> per rank [q 32 | k 16 | v 16].
        qkv = load(s0 / "root.model.layers.0.self_attn.qkv_proj/output_0.pth")
        assert tuple(qkv.shape) == (T0, 64) and qkv.dtype == torch.float32
        assert load(s0 / "root.model.layers.0/input_0.pth").dtype == torch.int64  # positions
        assert tuple(
            load(rank_dir / "1/root.model.layers.0.self_attn.qkv_proj/output_0.pth").shape
        ) == (2, 64)  # decode step: one token per request
        kron = s0 / "root.model.layers.1.mlp.experts.npu_kronecker_quant"
        assert tuple(load(kron / "input_1.pth").shape) == (8, 8)  # 64 = 8 x 8
    r0, r1 = (root / "torch_tensors" / f / "0" for f in folders)
    for name in (
        "root.model.layers.0.self_attn.o_proj/output_0.pth",
        "root.model.layers.0.mlp.down_proj/output_0.pth",
        "root.model.layers.1.mlp/output.pth",
    ):
        assert torch.allclose(load(r0 / name), load(r1 / name), atol=1e-6), name
    # current vLLM: the experts output is already all-reduced, equal on both ranks and to the block
    part = "root.model.layers.1.mlp.experts/output.pth"
    assert torch.equal(load(r0 / part), load(r1 / part))
    assert torch.equal(load(r0 / part), load(r0 / "root.model.layers.1.mlp/output.pth"))
    rot = r0 / "root.model.layers.2.self_attn.rotary_emb"  # in place: inputs are the outputs
    assert torch.equal(load(rot / "input_1.pth"), load(rot / "output_0.pth"))
    assert torch.equal(load(rot / "input_2.pth"), load(rot / "output_1.pth"))


def test_msit_fused_moe_layout(tiny_model: Path, tmp_path: Path) -> None:
    """The older layout (vllm-ascend releases): FusedMoE partial sums, per-layer mlp.gate."""
    opts = DumpOptions(tool="msit", dump_path=tmp_path, token_range=[0])
    res = run_offline(
        tiny_model, tp=2, prompts=PROMPTS, max_tokens=1, dump=opts, layout="fused_moe"
    )
    folders = sorted((res.dump_root / "torch_tensors").iterdir())
    expected = expected_msit_modules(tiny_model, "fused_moe") - {
        n for n in expected_msit_modules(tiny_model, "fused_moe") if "kronecker" in n
    }
    for f in folders:
        assert {p.name for p in (f / "0").iterdir()} == expected
    r0, r1 = (f / "0" for f in folders)
    part = "root.model.layers.1.mlp.experts/output.pth"
    total = load(r0 / part) + load(r1 / part)
    assert not torch.allclose(load(r0 / part), load(r1 / part))  # partial sums differ
    assert torch.allclose(total, load(r0 / "root.model.layers.1.mlp/output.pth"), atol=1e-6)


def test_msit_statistics_only(tiny_model: Path, tmp_path: Path) -> None:
    opts = DumpOptions(
        tool="msit",
        dump_path=tmp_path,
        token_range=[0],
        layer_name="root.model.layers.1.self_attn.*",
        dump_statistics_mode=1,
    )
    res = run_offline(tiny_model, tp=2, prompts=PROMPTS, max_tokens=1, dump=opts)
    rank_dir = next((res.dump_root / "torch_tensors").iterdir())
    mods = sorted(p.name for p in (rank_dir / "0").iterdir())
    assert mods == [  # the shared rotary_emb is named after layer 2: not selected
        f"root.model.layers.1.self_attn.{m}"
        for m in ("attn", "k_norm", "o_proj", "q_norm", "qkv_proj")
    ]
    qkv = rank_dir / "0/root.model.layers.1.self_attn.qkv_proj"
    assert sorted(p.name for p in qkv.iterdir()) == ["statistics.csv"]
    header = (qkv / "statistics.csv").read_text().splitlines()[0]
    assert header == "NodeName,NodeType,InputOutput,Index,DataType,Shape,Max,Min,Mean,L2Norm"


def test_msprobe_layout(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("msprobe")
    opts = DumpOptions(tool="msprobe", dump_path=tmp_path / "probe", token_range=[0, 1])
    res = run_offline(tiny_model, tp=2, prompts=PROMPTS, max_tokens=3, dump=opts)
    root = res.dump_root
    assert sorted(p.name for p in root.iterdir()) == ["config.json", "ranks.json", "step0", "step1"]
    assert json.loads((root / "ranks.json").read_text()) == {"rank0": 0, "rank1": 1}
    for step in ("step0", "step1"):
        assert sorted(p.name for p in (root / step).iterdir()) == ["rank0", "rank1"]
        for rank in ("rank0", "rank1"):
            d = root / step / rank
            assert sorted(p.name for p in d.iterdir()) == [
                "construct.json",
                "dump.json",
                "dump_tensor_data",
                "stack.json",
            ]
            data = json.loads((d / "dump.json").read_text())
            assert data["task"] == "tensor" and data["level"] == "L0"
            key = "Module.model.layers.1.self_attn.qkv_proj.QKVParallelLinear.forward.0"
            assert data["data"][key]["output"][0]["shape"] == [T0 if step == "step0" else 2, 64]
            names = {p.name for p in (d / "dump_tensor_data").iterdir()}
            assert {
                f"{key}.input.0.pt",
                f"{key}.output.0.pt",
                "Module.model.layers.1.mlp.experts.MoERunner.forward.0.kwargs.hidden_states.pt",
                "Module.model.layers.1.mlp.experts.MoERunner.forward.0.output.0.pt",
                # msprobe names the twice-registered router after its first path
                "Module.model.layers.1.mlp.gate.GateLinear.forward.0.output.0.pt",
            } <= names
    a = root / "step0/rank0/dump_tensor_data"
    b = root / "step0/rank1/dump_tensor_data"
    name = "Module.model.layers.1.mlp.Qwen3MoeSparseMoeBlock.forward.0.output.0.pt"
    assert torch.allclose(load(a / name), load(b / name), atol=1e-6)
