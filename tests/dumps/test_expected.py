"""The expected tp of a run (studio_backend/dumps/expected.py) against shards cut by the synthetic
writer's own sharding code (REFERENCE.md section 2, written independently of expected.py)."""

from __future__ import annotations

import pytest
import torch

from studio_backend.dumps import expected as E
from studio_backend.dumps import synthetic as S


@pytest.mark.parametrize("tp", [1, 2, 4])  # 4 > kv heads (2): KV heads are replicated
@pytest.mark.parametrize("probe", ["o_proj", "qkv_proj"])
def test_tp_from_the_width_of_one_shard(tp: int, probe: str) -> None:
    cfg = S.SynthConfig()
    truth = S.make_truth(cfg, [3], seed=0)
    shapes = [
        (m, io, idx, list(t.shape))
        for _s, m, io, idx, r, t in S.rank_tensors(cfg, truth, tp, torch.float32, 1)
        if r == 0 and m.endswith(probe) and idx == 0
        and io == ("input" if probe == "o_proj" else "output")
    ]  # fmt: skip
    assert shapes
    found = E.tp_from_widths(E.heads_of(cfg.hf_config()), shapes)
    assert found is not None and found[0] == tp


def test_probes_that_disagree_are_no_evidence() -> None:
    heads = E.heads_of(S.SynthConfig().hf_config())
    shapes = [("a.o_proj", "input", 0, [3, 8]), ("a.qkv_proj", "output", 0, [3, 32])]  # 2 vs 1
    assert E.tp_from_widths(heads, shapes) is None


def test_decide_takes_the_largest_proof() -> None:
    assert E.decide(present=1) == E.Expected(1, "1 rank folder(s) present (assumed)", False)
    assert E.decide(present=1, ranks_json=2).tp == 2
    assert E.decide(present=1, folder_ranks=[3]).tp == 4
    e = E.decide(present=3, widths=(2, "w"))
    assert e.tp == 3 and e.known  # more folders than the widths say: the folders are there


@pytest.mark.parametrize(
    "key, value", [("num_attention_heads", 0), ("num_key_value_heads", -1), ("head_dim", "4"),
                   ("hidden_size", True)],
)  # fmt: skip
def test_config_problems(key: str, value) -> None:
    cfg = S.SynthConfig().hf_config() | {key: value}
    assert E.config_problems(cfg) == [f"config.json {key} = {value!r} is not a positive integer"]
    assert E.heads_of(cfg) is None
