"""Load hub-named Qwen3-MoE weights into this rank's shards (vLLM's weight_loader rules).

Any checkpoint layout (fused experts, AWQ / GPTQ / FP8) reaches this module as hub-named float
tensors through studio_backend.models.checkpoint_reader."""

from __future__ import annotations

from pathlib import Path

import torch

from studio_backend.engines.reference.layers import divide
from studio_backend.engines.reference.model import Qwen3MoeForCausalLM
from studio_backend.engines.reference.parallel import tp_rank, tp_size
from studio_backend.errors import InputError
from studio_backend.models.checkpoint_reader import open_checkpoint


def _rows(t: torch.Tensor, rank: int, parts: int) -> torch.Tensor:
    n = divide(t.shape[0], parts)
    return t[rank * n : (rank + 1) * n]


def _cols(t: torch.Tensor, rank: int, parts: int) -> torch.Tensor:
    n = divide(t.shape[1], parts)
    return t[:, rank * n : (rank + 1) * n]


def _kv_rows(t: torch.Tensor, head_dim: int, num_kv_heads: int) -> torch.Tensor:
    """This rank's KV heads; with tp > num_kv_heads rank r holds head r // (tp / kv_heads)."""
    tp, r = tp_size(), tp_rank()
    if tp >= num_kv_heads:
        head = r // divide(tp, num_kv_heads)
        return t[head * head_dim : (head + 1) * head_dim]
    return _rows(t, r, tp)


def _vocab_rows(t: torch.Tensor, per_partition: int) -> torch.Tensor:
    start = tp_rank() * per_partition
    out = torch.zeros(per_partition, t.shape[1], dtype=t.dtype)
    rows = t[start : start + per_partition]
    out[: rows.shape[0]] = rows
    return out


def load_weights(model: Qwen3MoeForCausalLM, model_dir: Path, dtype: torch.dtype) -> None:
    """Fill every parameter of ``model`` with this rank's shard of the checkpoint."""
    cfg = model.config
    ck = open_checkpoint(model_dir)
    tp, r = tp_size(), tp_rank()

    def put(param: torch.nn.Parameter, value: torch.Tensor, name: str) -> None:
        if tuple(param.shape) != tuple(value.shape):
            raise InputError(
                model_dir,
                f"{name}: shape {tuple(value.shape)}, expected "
                f"{tuple(param.shape)} for this config and tp={tp}",
            )
        param.data = value.to(dtype).contiguous()

    m = model.model
    put(
        m.embed_tokens.weight,
        _vocab_rows(ck.get("model.embed_tokens.weight"), m.embed_tokens.weight.shape[0]),
        "model.embed_tokens.weight",
    )
    lm_name = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
    put(model.lm_head.weight, _vocab_rows(ck.get(lm_name), model.lm_head.weight.shape[0]), lm_name)
    put(m.norm.weight, ck.get("model.norm.weight"), "model.norm.weight")
    for i, layer in enumerate(m.layers):
        p = f"model.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            put(getattr(layer, norm).weight, ck.get(p + norm + ".weight"), p + norm)
        a = layer.self_attn
        put(a.q_norm.weight, ck.get(p + "self_attn.q_norm.weight"), p + "q_norm")
        put(a.k_norm.weight, ck.get(p + "self_attn.k_norm.weight"), p + "k_norm")
        qkv = torch.cat(
            [
                _rows(ck.get(p + "self_attn.q_proj.weight"), r, tp),
                _kv_rows(
                    ck.get(p + "self_attn.k_proj.weight"), cfg.head_dim, cfg.num_key_value_heads
                ),
                _kv_rows(
                    ck.get(p + "self_attn.v_proj.weight"), cfg.head_dim, cfg.num_key_value_heads
                ),
            ]
        )
        put(a.qkv_proj.weight, qkv, p + "self_attn.qkv_proj")
        put(a.o_proj.weight, _cols(ck.get(p + "self_attn.o_proj.weight"), r, tp), p + "o_proj")
        if cfg.is_moe_layer(i):
            put(layer.mlp.gate.weight, ck.get(p + "mlp.gate.weight"), p + "mlp.gate")
            w13, w2 = [], []
            for e in range(cfg.num_experts):
                ep = f"{p}mlp.experts.{e}."
                w13.append(
                    torch.cat(
                        [
                            _rows(ck.get(ep + "gate_proj.weight"), r, tp),
                            _rows(ck.get(ep + "up_proj.weight"), r, tp),
                        ]
                    )
                )
                w2.append(_cols(ck.get(ep + "down_proj.weight"), r, tp))
            put(layer.mlp.experts.w13_weight, torch.stack(w13), p + "mlp.experts.w13")
            put(layer.mlp.experts.w2_weight, torch.stack(w2), p + "mlp.experts.w2")
        else:
            gate_up = torch.cat(
                [
                    _rows(ck.get(p + "mlp.gate_proj.weight"), r, tp),
                    _rows(ck.get(p + "mlp.up_proj.weight"), r, tp),
                ]
            )
            put(layer.mlp.gate_up_proj.weight, gate_up, p + "mlp.gate_up_proj")
            put(
                layer.mlp.down_proj.weight,
                _cols(ck.get(p + "mlp.down_proj.weight"), r, tp),
                p + "mlp.down_proj",
            )
