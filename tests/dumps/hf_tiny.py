"""A tiny Hugging Face Qwen3MoeForCausalLM run under the real msit_llm / msprobe dump hooks.

Run as a script in a fresh process (both tools keep process-wide singletons):
``python -m tests.dumps.hf_tiny msit|msit-stats|msprobe|msprobe-stats OUT``. The hooks are installed as the
tools' docs say (msit: ``DumpConfig`` + ``register_hook``; msprobe: ``PrecisionDebugger`` with a
JSON config, ``start(model=...)`` / ``stop()`` / ``step()``). Besides the dump, ``OUT/oracle/``
gets what plain torch forward hooks saw (numpy), and ``OUT/config.json`` the model config.

Planted so the token axis matters: channel 3 of layer 0's input_layernorm is 50x larger for
every token, and token id 77 (only at batch 1, position 2: flat token 9) has embedding value 40
at channel 5. A [batch, seq, hidden] tensor read as [batch, seq*hidden] would put that outlier
at "token 1, channel 2*64+5".
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

BATCH, SEQ = 2, 7
ORACLE = (
    "model.embed_tokens",
    "model.layers.0.input_layernorm",
    "model.layers.0.self_attn.q_norm",
    "model.layers.0.self_attn.k_norm",
    "model.layers.0.mlp.gate",
    "model.layers.1.mlp",
    "model.norm",
)


def config_dict() -> dict:
    return dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, max_position_embeddings=128,
        tie_word_embeddings=False, architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe",
    )  # fmt: skip


def build():
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    torch.manual_seed(0)
    model = Qwen3MoeForCausalLM(Qwen3MoeConfig(**config_dict())).eval()
    with torch.no_grad():
        model.model.layers[0].input_layernorm.weight[3] = 50.0
        model.model.embed_tokens.weight[77, 5] = 40.0
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 77, (BATCH, SEQ), generator=g)
    ids[1, 2] = 77
    return model, ids


def _oracle_hooks(model, out: Path) -> None:
    (out / "oracle").mkdir(parents=True, exist_ok=True)
    mods = dict(model.named_modules())

    def save(name: str):
        def hook(_m, _args, output):
            first = output[0] if isinstance(output, tuple) else output
            np.save(out / "oracle" / f"{name}.npy", first.detach().float().numpy())

        return hook

    for name in ORACLE:
        mods[name].register_forward_hook(save(name))


def main(tool: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model, ids = build()
    (out / "config.json").write_text(json.dumps(config_dict()))
    np.save(out / "ids.npy", ids.numpy())
    if tool in ("msit", "msit-stats"):
        from msit_llm import DumpConfig, register_hook

        dump = out / "dump"
        mode = 1 if tool == "msit-stats" else 0  # dump_statistics_mode 1: statistics.csv only
        register_hook(model, DumpConfig(dump_path=str(dump), token_range=[0], mode=["module"],
                                        dump_statistics_mode=mode))  # fmt: skip
        _oracle_hooks(model, out)
        with torch.no_grad():
            model(ids)
        return
    from msprobe.pytorch import PrecisionDebugger

    task = "statistics" if tool == "msprobe-stats" else "tensor"
    cfg = {"task": task, "dump_path": str(out / "dump"), "rank": [], "step": [0], "level": "L0",
           task: {"scope": [], "list": [], "data_mode": ["all"]}}  # fmt: skip
    (out / "msprobe_config.json").write_text(json.dumps(cfg))
    debugger = PrecisionDebugger(config_path=str(out / "msprobe_config.json"))
    _oracle_hooks(model, out)
    debugger.start(model=model)
    with torch.no_grad():
        model(ids)
    debugger.stop()
    debugger.step()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
