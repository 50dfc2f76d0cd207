"""Self-test of the SGLang fixture: files load safely, shards undo to the truth, and the truth
itself matches transformers' Qwen3-MoE run on the same weights (an independent oracle)."""

from __future__ import annotations

import re

import pytest
import torch

from tests.dumps import sglang_docs_fixture as F

D, NH, NKV = F.D, F.NH, F.NKV


def _replica_groups(tp: int) -> list[list[int]]:
    """Ranks holding the same KV heads (QKVParallelLinear replicates when tp > kv heads)."""
    per = max(1, tp // NKV)
    return [list(range(g, g + per)) for g in range(0, tp, per)]


def _dedup_kv(parts: list[torch.Tensor], tp: int) -> list[torch.Tensor]:
    out = []
    for group in _replica_groups(tp):
        for r in group[1:]:
            assert torch.equal(parts[r], parts[group[0]]), "KV replicas differ"
        out.append(parts[group[0]])
    return out


def unshard(kind: str, parts: list[torch.Tensor], tp: int) -> torch.Tensor:
    """Inverse of SGLang's TP layout for one output, written from REFERENCE.md sections 1-2."""
    nh, nkv = NH // tp, max(1, NKV // tp)
    if kind == "rep":
        assert all(torch.equal(p, parts[0]) for p in parts), "replicated output differs"
        return parts[0]
    if kind in ("o_partial", "moe_partial"):
        return torch.stack(parts).sum(0)
    if kind == "qkv":
        split = [p.split([nh * D, nkv * D, nkv * D], -1) for p in parts]
        q = torch.cat([s[0] for s in split], -1)
        k = torch.cat(_dedup_kv([s[1] for s in split], tp), -1)
        v = torch.cat(_dedup_kv([s[2] for s in split], tp), -1)
        return torch.cat([q, k, v], -1)
    if kind == "q_heads":
        return torch.cat(parts, -1)
    if kind == "kv_heads":
        return torch.cat(_dedup_kv(parts, tp), -1)
    if kind in ("q_rows", "kv_rows"):  # [tokens*heads_r, D]: token-major rows
        n = nh if kind == "q_rows" else nkv
        parts = parts if kind == "q_rows" else _dedup_kv(parts, tp)
        return torch.cat([p.view(-1, n, D) for p in parts], 1).reshape(-1, D)
    raise AssertionError(kind)


def _check(kind: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    if kind.endswith("partial"):  # unreduced sums: equal to the truth up to fp32 rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(got, want)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_hook_dump_layout_and_stitching(tmp_path, tp):
    res = F.write_hook_dump(tmp_path, tp=tp, passes=3)
    assert json_cfg(res)["num_experts"] == 8 and res["config_path"] == tmp_path / "config.json"
    folders = sorted(p.name for p in res["dump_dir"].iterdir())
    assert folders == [f"TP{r}_PP0_Rank{r}_pid{4242 + r}" for r in range(tp)]
    loaded = {}
    for r, folder in enumerate(folders):
        names = sorted(p.name for p in (res["dump_dir"] / folder).iterdir())
        assert names == ["Pass00000.pt", "Pass00001.pt", "Pass00002.pt"]
        for n, name in enumerate(names):
            loaded[r, n] = torch.load(res["dump_dir"] / folder / name, weights_only=True)
    p0, p1 = loaded[0, 0], loaded[0, 1]
    # model and logits_processor of pass N are written into Pass N+1, first in the dict
    assert "model" not in p0 and list(p1)[:3] == ["model", "logits_processor", "model.embed_tokens"]
    assert not any(k.endswith("mlp.experts") or k.startswith("lm_head") for k in p0)
    assert isinstance(p0["model.layers.0.input_layernorm"], torch.Tensor)  # no residual yet
    assert len(p0["model.layers.1.input_layernorm"]) == 2 and len(p0["model.norm"]) == 2
    assert (
        len(p0["model.layers.0.mlp.topk"]) == 3
        and p0["model.layers.0.mlp.topk"][1].dtype == torch.int32
    )
    assert isinstance(
        p0["model.layers.0.self_attn.qkv_proj"], torch.Tensor
    )  # (out, None) unwrapped
    nkv = max(1, NKV // tp)
    assert p0["model.layers.0.self_attn.qkv_proj"].shape == (7, (NH // tp + 2 * nkv) * D)
    assert p0["model.layers.0.self_attn.q_norm"].shape == (7 * NH // tp, D)
    assert p0["model.forward_batch_info.positions"].tolist() == list(range(7))
    assert p1["model.forward_batch_info.seq_lens"].tolist() == [8]
    # one shared rotary_emb: every layer's key holds the last layer's call
    for i in range(F.L):
        assert torch.equal(
            p0[f"model.layers.{i}.self_attn.rotary_emb"][1],
            p0["model.layers.1.self_attn.rotary_emb"][1],
        )
    assert res["entries"][(0, "model")]["file_pass"] == 1 and (2, "model") not in res["truth"]
    assert res["truth"].keys() == res["entries"].keys()
    for key, want in res["truth"].items():
        e = res["entries"][key]
        parts = []
        for r in range(tp):
            v = loaded[r, e["file_pass"]][e["key"]]
            parts.append(v if e["index"] is None else v[e["index"]])
        _check(e["sharding"], unshard(e["sharding"], parts, tp), want)
        if tp == 1:
            _check(e["sharding"], parts[0], want)


NAME_RE = re.compile(
    r"step=(\d+)___rank=(\d+)___dump_index=(\d+)___name=([^_][^/]*?)___recompute_status=disabled"
    r"(?:___layer_id=(\d+))?\.pt"
)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_dumper_dump_layout_and_stitching(tmp_path, tp):
    res = F.write_dumper_dump(tmp_path, tp=tp, steps=2)
    assert res["dump_dir"] == tmp_path / "dumper" / F.EXP_NAME
    by_loc, indices = {}, {r: [] for r in range(tp)}
    for path in sorted(res["files"], key=lambda p: int(NAME_RE.fullmatch(p.name)[3])):
        m = NAME_RE.fullmatch(path.name)
        assert m, path.name
        step, rank, index, name, layer = m.groups()
        obj = torch.load(path, weights_only=True)
        assert set(obj) == {"value", "meta"}
        meta = obj["meta"]
        want_meta = {"step": int(step), "rank": int(rank), "dump_index": int(index), "name": name}
        assert {k: meta[k] for k in want_meta} == want_meta and meta["world_size"] == tp
        assert meta.get("layer_id") == (None if layer is None else int(layer))
        info = meta["sglang_parallel_info"]
        assert (info["tp_rank"], info["tp_size"], info["attn_tp_size"]) == (int(rank), tp, tp)
        indices[int(rank)].append(int(index))
        by_loc[int(step), name, meta.get("layer_id"), int(rank)] = obj["value"]
    for r in range(tp):
        assert indices[r] == list(range(1, len(indices[r]) + 1))  # counts across steps
    names = {k[1] for k in by_loc}
    assert {"input_ids", "seq_lens", "positions", "req_pool_indices"} <= names
    assert "non_intrusive__model.layers.1.self_attn.rotary_emb.output.0" not in names
    assert "non_intrusive__model.layers.0.mlp.experts.output" in names
    assert not any("inputs." in n for n in names)
    for key, want in res["truth"].items():
        e = res["entries"][key]
        parts = [by_loc[key[0], e["name"], e["layer_id"], r] for r in range(tp)]
        _check(e["sharding"], unshard(e["sharding"], parts, tp), want)
    # the unreduced MoE output and its all-reduced block output agree after summing
    moe = res["truth"][0, "model.layers.0.mlp"]
    torch.testing.assert_close(res["truth"][0, "model.layers.0.mlp.experts"], moe)


def test_dumper_filter_is_applied_like_dumper(tmp_path):
    res = F.write_dumper_dump(tmp_path, tp=2, dumper_filter="layer_id == 1")
    assert res["files"] and all("___layer_id=1.pt" in p.name for p in res["files"])
    assert all(k[1].startswith("model.layers.") for k in res["truth"])


def test_sizes_stay_small(tmp_path):
    hook = F.write_hook_dump(tmp_path / "h", tp=4)
    assert sum(p.stat().st_size for p in hook["files"]) < 400_000


def json_cfg(res) -> dict:
    import json

    return json.loads(res["config_path"].read_text())


def test_truth_matches_transformers_qwen3_moe(tmp_path):
    """Independent oracle: HF Qwen3MoeForCausalLM (float64) on the same weights and tokens."""
    transformers = pytest.importorskip("transformers")
    res = F.write_hook_dump(tmp_path, tp=2, passes=3)
    cfg = {k: v for k, v in json_cfg(res).items() if k not in ("architectures", "model_type")}
    cfg.pop("torch_dtype")
    model = (
        transformers.Qwen3MoeForCausalLM(
            transformers.Qwen3MoeConfig(
                **cfg, experts_implementation="eager", attn_implementation="eager"
            )
        )
        .double()
        .eval()
    )
    w = {k: v.double() for k, v in res["weights"].items()}
    state = {k: v for k, v in w.items() if ".mlp.experts." not in k}
    for i in range(F.L):
        p = f"model.layers.{i}.mlp.experts."
        gate_up = [
            torch.cat([w[p + f"{e}.gate_proj.weight"], w[p + f"{e}.up_proj.weight"]])
            for e in range(F.E)
        ]
        state[p + "gate_up_proj"] = torch.stack(gate_up)
        state[p + "down_proj"] = torch.stack([w[p + f"{e}.down_proj.weight"] for e in range(F.E)])
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all("rotary" in m for m in missing)
    toks = res["tokens"]
    ids = torch.tensor([toks["prompt"] + toks["generated"][:2]])
    with torch.no_grad():
        out = model(input_ids=ids, output_router_logits=True)
    assert out.logits[0, 6:8].argmax(-1).tolist() == toks["generated"][:2]
    truth = res["truth"]
    for p, row in ((0, 6), (1, 7)):
        got = out.logits[0, row : row + 1].float()
        torch.testing.assert_close(truth[p, "logits_processor"], got, rtol=1e-5, atol=1e-5)
    rows = {0: slice(0, 7), 1: slice(7, 8), 2: slice(8, 9)}
    for i, router in enumerate(out.router_logits):
        for p, sl in rows.items():
            want = router.view(-1, F.E)[sl].float()
            torch.testing.assert_close(
                truth[p, f"model.layers.{i}.mlp.gate"], want, rtol=1e-5, atol=1e-5
            )
