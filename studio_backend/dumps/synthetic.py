"""Synthetic dumps with known truth: unsharded activations, sharded the way vLLM shards them.

Used by tests (the unsharded arrays are the oracle for stitching), by the benchmark and by the
browser test. The data is random (seeded) and labelled synthetic wherever it is shown.
Sharding follows REFERENCE.md section 2, written independently of the stitcher.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class SynthConfig:
    hidden: int = 16
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 4
    intermediate: int = 8  # per MoE expert; also the dense MLP width
    experts: int = 4
    layers: int = 2
    dense_layers: tuple[int, ...] = (0,)  # mlp_only_layers: dense MLP instead of MoE

    def hf_config(self) -> dict:
        return {
            "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
            "hidden_size": self.hidden, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.head_dim,
            "moe_intermediate_size": self.intermediate, "intermediate_size": self.intermediate,
            "num_experts": self.experts, "num_hidden_layers": self.layers,
            "mlp_only_layers": list(self.dense_layers), "decoder_sparse_step": 1,
        }  # fmt: skip


Truth = dict[tuple[int, str, str, int], np.ndarray]  # (step, module, io, idx) -> array


def kv_heads_of_rank(r: int, tp: int, kv_heads: int) -> list[int]:
    if tp <= kv_heads:
        per = kv_heads // tp
        return list(range(r * per, (r + 1) * per))
    return [r // (tp // kv_heads)]


def _cols(a: np.ndarray, heads: list[int], hd: int) -> np.ndarray:
    return np.concatenate([a[..., h * hd : (h + 1) * hd] for h in heads], axis=-1)


def make_truth(cfg: SynthConfig, tokens: list[int], seed: int = 0, outlier: float = 0.0) -> Truth:
    """Random unsharded activations per step (fp32), with an optional massive-outlier channel."""
    rng = np.random.default_rng(seed)
    truth: Truth = {}
    q_w, kv_w = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    for step, t in enumerate(tokens):
        for layer in range(cfg.layers):
            p = f"model.layers.{layer}"
            x = rng.standard_normal((t, cfg.hidden)).astype(np.float32)
            if outlier:
                x[0, 3] = outlier
            normed = rng.standard_normal((t, cfg.hidden)).astype(np.float32)
            truth[(step, f"{p}.input_layernorm", "input", 0)] = x
            truth[(step, f"{p}.input_layernorm", "output", 0)] = normed
            qkv = rng.standard_normal((t, q_w + 2 * kv_w)).astype(np.float32)
            truth[(step, f"{p}.self_attn.qkv_proj", "input", 0)] = normed
            truth[(step, f"{p}.self_attn.qkv_proj", "output", 0)] = qkv
            q = qkv[:, :q_w].reshape(t, cfg.heads, cfg.head_dim)
            k = qkv[:, q_w : q_w + kv_w].reshape(t, cfg.kv_heads, cfg.head_dim)
            truth[(step, f"{p}.self_attn.q_norm", "output", 0)] = q * 0.5
            truth[(step, f"{p}.self_attn.k_norm", "output", 0)] = k * 0.5
            attn = rng.standard_normal((t, q_w)).astype(np.float32)
            o = rng.standard_normal((t, cfg.hidden)).astype(np.float32)
            truth[(step, f"{p}.self_attn.o_proj", "input", 0)] = attn
            truth[(step, f"{p}.self_attn.o_proj", "output", 0)] = o
            h2 = rng.standard_normal((t, cfg.hidden)).astype(np.float32)
            if layer in cfg.dense_layers:
                gu = rng.standard_normal((t, 2 * cfg.intermediate)).astype(np.float32)
                act = rng.standard_normal((t, cfg.intermediate)).astype(np.float32)
                down = rng.standard_normal((t, cfg.hidden)).astype(np.float32)
                truth[(step, f"{p}.mlp.gate_up_proj", "input", 0)] = h2
                truth[(step, f"{p}.mlp.gate_up_proj", "output", 0)] = gu
                truth[(step, f"{p}.mlp.down_proj", "input", 0)] = act
                truth[(step, f"{p}.mlp.down_proj", "output", 0)] = down
                truth[(step, f"{p}.mlp", "output", 0)] = down
            else:
                logits = rng.standard_normal((t, cfg.experts)).astype(np.float32)
                truth[(step, f"{p}.mlp.gate", "input", 0)] = h2
                truth[(step, f"{p}.mlp.gate", "output", 0)] = logits
                truth[(step, f"{p}.mlp.experts", "output", 0)] = None  # type: ignore[assignment]
                truth[(step, f"{p}.mlp", "input", 0)] = h2
    return truth


CLASSES = {
    "input_layernorm": "RMSNorm", "qkv_proj": "QKVParallelLinear", "q_norm": "RMSNorm",
    "k_norm": "RMSNorm", "o_proj": "RowParallelLinear", "gate_up_proj": "MergedColumnParallelLinear",
    "down_proj": "RowParallelLinear", "gate": "ReplicatedLinear", "experts": "FusedMoE",
    "mlp": "Qwen3MoeSparseMoeBlock",
}  # fmt: skip


def shard(cfg: SynthConfig, module: str, io: str, arr: np.ndarray, r: int, tp: int) -> np.ndarray:
    """Rank r's view of an unsharded activation under vLLM tensor parallelism."""
    last = module.rsplit(".", 1)[-1]
    hd = cfg.head_dim
    if last == "qkv_proj" and io == "output":
        q_w, kv_w = cfg.heads * hd, cfg.kv_heads * hd
        per_q = cfg.heads // tp
        q = _cols(arr[:, :q_w], list(range(r * per_q, (r + 1) * per_q)), hd)
        kvh = kv_heads_of_rank(r, tp, cfg.kv_heads)
        return np.concatenate(
            [q, _cols(arr[:, q_w : q_w + kv_w], kvh, hd), _cols(arr[:, q_w + kv_w :], kvh, hd)], -1
        )
    if last == "q_norm":
        per = cfg.heads // tp
        return arr[:, r * per : (r + 1) * per, :]
    if last == "k_norm":
        return arr[:, kv_heads_of_rank(r, tp, cfg.kv_heads), :]
    if last == "gate_up_proj" and io == "output":
        i = arr.shape[-1] // 2
        w = i // tp
        return np.concatenate(
            [arr[:, r * w : (r + 1) * w], arr[:, i + r * w : i + (r + 1) * w]], -1
        )
    if last in ("o_proj", "down_proj") and io == "input":
        w = arr.shape[-1] // tp
        return arr[:, r * w : (r + 1) * w]
    return arr


def rank_tensors(cfg: SynthConfig, truth: Truth, tp: int, dtype: torch.dtype, seed: int):
    """Yield (step, module, io, idx, rank, tensor) for every rank's dumped tensor.

    FusedMoE outputs become random per-rank partial sums; their sum (in the dump's dtype) is then
    recorded in ``truth`` as the experts' and the parent ``mlp``'s true output. A truth that
    already holds that output (written before, e.g. at another TP) is split into partial sums
    of it instead, so two dumps of one truth agree there up to the dtype's rounding.
    """
    rng = np.random.default_rng(seed)
    partials: dict[tuple[int, str], list[np.ndarray]] = {}

    def rounded(a: np.ndarray) -> np.ndarray:
        return torch.from_numpy(a.astype(np.float32)).to(dtype).float().numpy()

    for step, module, io, idx in list(truth):
        if module.endswith(".mlp.experts"):
            t = truth[(step, module.rsplit(".", 1)[0], "input", 0)].shape[0]
            given = truth[(step, module, io, idx)]
            ps = [rounded(rng.standard_normal((t, cfg.hidden))) for _ in range(tp)]
            if given is not None:
                rest = np.sum(np.stack(ps[:-1]), axis=0, dtype=np.float32) if tp > 1 else 0.0
                ps[-1] = rounded(given - rest)
            total = (
                torch.from_numpy(np.sum(np.stack(ps), axis=0, dtype=np.float32))
                .to(dtype)
                .float()
                .numpy()
            )
            truth[(step, module, io, idx)] = total
            truth[(step, module.rsplit(".", 1)[0], "output", 0)] = total
            partials[(step, module)] = ps
    for (step, module, io, idx), arr in truth.items():
        for r in range(tp):
            data = (
                partials[(step, module)][r]
                if (step, module) in partials
                else shard(cfg, module, io, arr, r, tp)
            )
            yield step, module, io, idx, r, torch.from_numpy(np.ascontiguousarray(data)).to(dtype)


def write_msit(
    root: Path,
    cfg: SynthConfig,
    truth: Truth,
    tp: int,
    *,
    dtype: torch.dtype = torch.float32,
    seed: int = 1,
    model_tree: bool = True,
    config_json: bool = True,
    device: str = "npu",
) -> Path:
    """Write an msit_llm dump of ``truth`` for ``tp`` ranks; returns ``<root>/msit_dump_*``."""
    session = root / "msit_dump_20261123_010000"
    tt = session / "torch_tensors"

    def folder(r: int) -> str:
        return f"{device}{r}_{4000 + r}" if device != "cpu" else f"cpu_{4000 + r}"

    for step, module, io, idx, r, t in rank_tensors(cfg, truth, tp, dtype, seed):
        d = tt / folder(r) / str(step) / f"root.{module}"
        d.mkdir(parents=True, exist_ok=True)
        torch.save(t, d / (f"{io}.pth" if idx == 0 and io == "output" else f"{io}_{idx}.pth"))
    for r in range(tp):
        if model_tree:
            (tt / folder(r) / "model_tree.json").write_text(json.dumps(_tree(cfg)))
    if config_json:
        (session / "config.json").write_text(json.dumps(cfg.hf_config()))
    return session


def module_class(module: str) -> str:
    last = module.rsplit(".", 1)[-1]
    return CLASSES.get(last, "Qwen3MoeDecoderLayer")


def write_msprobe(
    root: Path,
    cfg: SynthConfig,
    truth: Truth,
    tp: int,
    *,
    dtype: torch.dtype = torch.float32,
    seed: int = 1,
    crashed: bool = False,
) -> Path:
    """Write an msprobe dump (``step<N>/rank<R>/dump_tensor_data``); ``crashed`` omits the JSON."""
    entries: dict[tuple[int, int], dict] = {}
    for step, module, io, idx, r, t in rank_tensors(cfg, truth, tp, dtype, seed):
        d = root / f"step{step}" / f"rank{r}" / "dump_tensor_data"
        d.mkdir(parents=True, exist_ok=True)
        node = f"Module.{module}.{module_class(module)}.forward.0"
        name = f"{node}.{io}.{idx}.pt"
        torch.save(t, d / name)
        data = entries.setdefault((step, r), {}).setdefault(node, {"input_args": [], "output": []})
        key = "input_args" if io == "input" else "output"
        f = t.float()
        data[key].append({
            "type": "torch.Tensor", "dtype": str(t.dtype), "shape": list(t.shape),
            "Max": float(f.max()), "Min": float(f.min()), "Mean": float(f.mean()),
            "Norm": float(f.norm()), "requires_grad": False, "data_name": name,
        })  # fmt: skip
    if not crashed:
        for (step, r), data in entries.items():
            d = root / f"step{step}" / f"rank{r}"
            (d / "dump.json").write_text(json.dumps({"task": "tensor", "level": "L0", "framework": "pytorch",
                                                     "dump_data_dir": str(d / "dump_tensor_data"), "data": data}))  # fmt: skip
            (d / "construct.json").write_text(json.dumps({n: None for n in data}))
            (d / "stack.json").write_text("{}")
    (root / "config.json").write_text(json.dumps(cfg.hf_config()))
    return root


def _tree(cfg: SynthConfig) -> dict:
    layers = []
    for i in range(cfg.layers):
        p = f"root.model.layers.{i}"
        attn = [{"name": f"{p}.self_attn.{n}", "type": CLASSES[n], "children": []}
                for n in ("qkv_proj", "q_norm", "k_norm", "o_proj")]  # fmt: skip
        if i in cfg.dense_layers:
            mlp_children = [
                {"name": f"{p}.mlp.{n}", "type": CLASSES[n], "children": []}
                for n in ("gate_up_proj", "down_proj")
            ]
            mlp = {"name": f"{p}.mlp", "type": "Qwen3MoeMLP", "children": mlp_children}
        else:
            mlp_children = [
                {"name": f"{p}.mlp.{n}", "type": CLASSES[n], "children": []}
                for n in ("gate", "experts")
            ]
            mlp = {"name": f"{p}.mlp", "type": "Qwen3MoeSparseMoeBlock", "children": mlp_children}
        layers.append({"name": p, "type": "Qwen3MoeDecoderLayer", "children": [
            {"name": f"{p}.input_layernorm", "type": "RMSNorm", "children": []},
            {"name": f"{p}.self_attn", "type": "Qwen3MoeAttention", "children": attn}, mlp]})  # fmt: skip
    return {"name": "root", "type": "Qwen3MoeForCausalLM", "children": [
        {"name": "root.model", "type": "Qwen3MoeModel", "children": layers}]}  # fmt: skip


def truth_key_map(truth: Truth) -> dict[tuple[int, str, str, int], np.ndarray]:
    return {k: v for k, v in truth.items() if k[2] != "_partials" and v is not None}
