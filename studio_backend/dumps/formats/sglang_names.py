"""SGLang Qwen3-MoE module names -> the class SGLang builds there (a table, read by both readers).

Neither SGLang dump layout records module classes, so the class comes from the last component
of the module path, as ``python/sglang/srt/models/qwen3_moe.py`` builds it. Where SGLang's
tensor-parallel semantics differ from vLLM's, the class name says so and has its own stitch
rule in ``studio_backend/dumps/stitch/rules.py``:

- ``self_attn.o_proj`` is ``RowParallelLinear(..., reduce_results=False)``: each rank's output is
  a partial sum; the layer communicator all-reduces it afterwards (``prepare_mlp``).
- ``self_attn`` returns that unreduced ``o_proj`` output (only the dumper's ``all`` mode dumps
  non-leaf modules).
- ``mlp.topk`` (``TopK``) returns ``(topk_weights, topk_ids, router_logits)``, all replicated.
"""

from __future__ import annotations

import re

# last path component -> SGLang class
SGLANG_CLASSES: dict[str, str] = {
    "embed_tokens": "VocabParallelEmbedding",
    "input_layernorm": "RMSNorm",
    "post_attention_layernorm": "RMSNorm",
    "norm": "RMSNorm",
    "q_norm": "RMSNorm",
    "k_norm": "RMSNorm",
    "qkv_proj": "QKVParallelLinear",
    "o_proj": "RowParallelLinear(reduce_results=False)",
    "attn": "RadixAttention",
    "rotary_emb": "RotaryEmbedding",
    "self_attn": "Qwen3MoeAttention(unreduced)",
    "gate": "ReplicatedLinear",
    "topk": "TopK",
    "experts": "FusedMoE",
    "gate_up_proj": "MergedColumnParallelLinear",
    "down_proj": "RowParallelLinear",
    "act_fn": "SiluAndMul",
    "logits_processor": "LogitsProcessor",
    "lm_head": "ParallelLMHead",
    # ForwardBatch fields the hook (``model.forward_batch_info.*``) and the dumper's core
    # fields record: the same on every rank
    "input_ids": "ForwardBatch",
    "positions": "ForwardBatch",
    "seq_lens": "ForwardBatch",
    "req_pool_indices": "ForwardBatch",
}

_LAYER = re.compile(r"(^|\.)layers\.\d+$")
_MLP = re.compile(r"(^|\.)layers\.\d+\.mlp$")


# Architectures whose attention builds o_proj with reduce_results=False (sglang/srt/models/
# qwen3_moe.py, qwen2_moe.py, qwen3.py); others (llama.py: a parameter) are not assumed to.
UNREDUCED_O_PROJ = frozenset({"Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "Qwen3ForCausalLM"})


def sglang_class(
    module: str, top: str = "model", architectures: list[str] | None = None
) -> str | None:
    """The SGLang class at ``module`` (a Qwen3-MoE path), or None when the table has none.

    ``architectures`` (config.json): the unreduced o_proj/self_attn classes apply to the
    architectures known to build them, and to Qwen3-MoE when the config does not say.
    """
    last = module.rsplit(".", 1)[-1]
    if last in ("o_proj", "self_attn") and architectures:
        if not UNREDUCED_O_PROJ & set(architectures):
            return "RowParallelLinear" if last == "o_proj" else None
    if module == top:
        return "Qwen3MoeModel"
    if module == "root":
        return "Qwen3MoeForCausalLM"
    if _LAYER.search(module):
        return "Qwen3MoeDecoderLayer"
    if _MLP.search(module):
        return "Qwen3MoeSparseMoeBlock"
    return SGLANG_CLASSES.get(last)
