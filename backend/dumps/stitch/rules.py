"""Which stitch rule applies to a (module, class, io, index): class first, then name.

vLLM Qwen3-MoE semantics (REFERENCE.md section 2). The override table is consulted first
(regex on the module path), then the module CLASS (model_tree.json / construct.json), then the
module NAME. Anything unmatched gets 'auto': kept only if all ranks are proven equal, flagged
otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Rule names:
#   replicated   every rank holds the whole tensor: verify equal, keep one
#   concat_last  sharded on the last dim: concatenate in rank order
#   kv_cols      KV columns on the last dim, replicas de-duplicated (tp > num_kv_heads)
#   q_heads      q heads on dim -2 ([T, heads, head_dim]); kv_heads: same with de-dup
#   qkv          QKVParallelLinear output: split each rank's [q|k|v], concat Q's, K's, V's
#   gate_up      MergedColumnParallelLinear output: split each rank's [gate|up]
#   partial_sum  FusedMoE(reduce_results=False) output: sum over ranks, verify vs parent output
#   auto         unknown: equal on all ranks -> replicated (verified), else flagged 'unknown'
IoRules = dict[str, dict[int, str] | str]

CLASS_RULES: dict[str, IoRules] = {
    "QKVParallelLinear": {"input": "replicated", "output": {0: "qkv"}},
    "MergedColumnParallelLinear": {"input": "replicated", "output": {0: "gate_up"}},
    "ColumnParallelLinear": {"input": "replicated", "output": {0: "concat_last"}},
    "RowParallelLinear": {"input": {0: "concat_last"}, "output": "replicated"},
    "ReplicatedLinear": {"input": "replicated", "output": "replicated"},
    "FusedMoE": {"input": "replicated", "output": {0: "partial_sum"}},
    "VocabParallelEmbedding": {"input": "replicated", "output": "replicated"},
    "RMSNorm": {"input": "replicated", "output": "replicated"},
    "Attention": {"input": {0: "concat_last", 1: "kv_cols", 2: "kv_cols"}, "output": "concat_last"},
    "RotaryEmbedding": {"input": {0: "replicated", 1: "concat_last", 2: "kv_cols"},
                        "output": {0: "concat_last", 1: "kv_cols"}},
    "Qwen3MoeSparseMoeBlock": {"input": "replicated", "output": "replicated"},
    "Qwen3MoeMLP": {"input": "replicated", "output": "replicated"},
    "Qwen3MoeAttention": {"input": "replicated", "output": "replicated"},
    "Qwen3MoeDecoderLayer": {"input": "replicated", "output": "replicated"},
    "Qwen3MoeModel": {"input": "replicated", "output": "replicated"},
    "LogitsProcessor": {"input": "replicated", "output": "replicated"},
    # SiluAndMul sees each rank's [gate_r | up_r] and returns its shard of act(gate) * up
    "SiluAndMul": {"input": {0: "gate_up"}, "output": {0: "concat_last"}},
    # api-mode op on the experts' (replicated) input; its transform matrices are replicated too
    "npu_kronecker_quant": {"input": "replicated", "output": "replicated"},
}  # fmt: skip

# SGLang's Qwen3-MoE classes where they differ from vLLM's (names given by the table in
# backend/dumps/formats/sglang_names.py; sglang/srt/models/qwen3_moe.py)
CLASS_RULES.update({
    # o_proj is built with reduce_results=False: the layer communicator all-reduces later
    "RowParallelLinear(reduce_results=False)": {"input": {0: "concat_last"},
                                                "output": {0: "partial_sum"}},
    # self_attn returns o_proj's unreduced output
    "Qwen3MoeAttention(unreduced)": {"input": "replicated", "output": {0: "partial_sum"}},
    "RadixAttention": {"input": {0: "concat_last", 1: "kv_cols", 2: "kv_cols"},
                       "output": "concat_last"},
    "TopK": {"input": "replicated", "output": "replicated"},
    "ForwardBatch": {"input": "replicated", "output": "replicated"},
    "ParallelLMHead": {"input": "replicated", "output": "replicated"},
    "Qwen3MoeForCausalLM": {"input": "replicated", "output": "replicated"},
})  # fmt: skip

# Partial sums are verified against the parent module's output, which for FusedMoE (the MoE
# block) and SGLang's o_proj (self_attn) IS their reduced sum. Not for these classes: SGLang's
# self_attn output is added to the residual inside the next norm, its parent (the decoder
# layer) returns the MLP output, so the sum stays 'assumed' (unverified).
NO_PARENT_CHECK: frozenset[str] = frozenset({"Qwen3MoeAttention(unreduced)"})

# Module-name fallback (last path component) when the class is unknown.
NAME_CLASSES: dict[str, str] = {
    "qkv_proj": "QKVParallelLinear",
    "gate_up_proj": "MergedColumnParallelLinear",
    "o_proj": "RowParallelLinear",
    "down_proj": "RowParallelLinear",
    "gate": "ReplicatedLinear",
    "experts": "FusedMoE",
    "embed_tokens": "VocabParallelEmbedding",
    "input_layernorm": "RMSNorm",
    "post_attention_layernorm": "RMSNorm",
    "norm": "RMSNorm",
    "attn": "Attention",
    "rotary_emb": "RotaryEmbedding",
    "self_attn": "Qwen3MoeAttention",
    "logits_processor": "LogitsProcessor",
    "act_fn": "SiluAndMul",
    "npu_kronecker_quant": "npu_kronecker_quant",
}

# Overrides by module path, consulted before the class (q_norm/k_norm are RMSNorm by class but
# see head-sharded [T, heads, head_dim] tensors).
OVERRIDES: list[tuple[re.Pattern[str], IoRules]] = [
    (re.compile(r"(^|\.)q_norm$"), {"input": "q_heads", "output": "q_heads"}),
    (re.compile(r"(^|\.)k_norm$"), {"input": "kv_heads", "output": "kv_heads"}),
]

_LAYER_MODULE = re.compile(r"(^|\.)layers\.\d+$")
_MLP = re.compile(r"(^|\.)layers\.\d+\.mlp$")


@dataclass(frozen=True)
class RuleChoice:
    rule: str
    source: str  # 'override' | 'class' | 'name' | 'none'
    module_class: str | None


def effective_class(module: str, module_class: str | None) -> tuple[str | None, str]:
    """The class used for the rule and where it came from."""
    if module_class and module_class in CLASS_RULES:
        return module_class, "class"
    last = module.rsplit(".", 1)[-1]
    if last in NAME_CLASSES:
        return NAME_CLASSES[last], "name"
    if _LAYER_MODULE.search(module):
        return "Qwen3MoeDecoderLayer", "name"
    if _MLP.search(module):
        return "Qwen3MoeSparseMoeBlock", "name"  # MoE or dense MLP block: both all-reduce
    if module in ("model", "root"):
        return "Qwen3MoeModel", "name"
    return module_class, "none"


def choose(module: str, module_class: str | None, io: str, idx: int) -> RuleChoice:
    for pattern, rules in OVERRIDES:
        if pattern.search(module):
            return RuleChoice(_pick(rules, io, idx), "override", module_class)
    cls, source = effective_class(module, module_class)
    if cls in CLASS_RULES:
        return RuleChoice(_pick(CLASS_RULES[cls], io, idx), source, cls)
    return RuleChoice("auto", "none", module_class)


def _pick(rules: IoRules, io: str, idx: int) -> str:
    r = rules.get(io, "auto")
    if isinstance(r, dict):
        return r.get(idx, "auto")
    return r
