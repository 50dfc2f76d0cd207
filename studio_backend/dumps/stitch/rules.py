"""Which stitch rule applies to a (module, class, io, index): class first, then name.

vLLM Qwen3-MoE semantics (REFERENCE.md sections 2 and 2b). The override table is consulted
first (regex on the module path), then the module CLASS (model_tree.json / construct.json),
then the module PATH and NAME (real vLLM clobbers model_tree.json, so names must suffice).
Anything unmatched gets 'auto': kept only if all ranks are proven equal, flagged otherwise.
The rules say how a tensor is sharded; the data decide whether that holds (stitcher.py).
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
#   partial_sum  MoE experts output: equal on all ranks -> already reduced (MoERunner, vLLM
#                0.32), kept as replicated; ranks differ -> partial sums (FusedMoE with
#                reduce_results=False): summed, then verified against the parent block's output
#   auto         unknown: equal on all ranks -> replicated (verified), else flagged 'unknown'
IoRules = dict[str, dict[int, str] | str]

CLASS_RULES: dict[str, IoRules] = {
    "QKVParallelLinear": {"input": "replicated", "output": {0: "qkv"}},
    "MergedColumnParallelLinear": {"input": "replicated", "output": {0: "gate_up"}},
    "ColumnParallelLinear": {"input": "replicated", "output": {0: "concat_last"}},
    "RowParallelLinear": {"input": {0: "concat_last"}, "output": "replicated"},
    "ReplicatedLinear": {"input": "replicated", "output": "replicated"},
    "FusedMoE": {"input": "replicated", "output": {0: "partial_sum"}},
    # vLLM 0.32: the experts' runner all-reduces itself; its router is a ReplicatedLinear
    "MoERunner": {"input": "replicated", "output": "replicated"},
    "GateLinear": {"input": "replicated", "output": "replicated"},
    "VocabParallelEmbedding": {"input": "replicated", "output": "replicated"},
    "RMSNorm": {"input": "replicated", "output": "replicated"},
    # attn(q, k, v): head-sharded q, k, v (KV replicas de-duplicated when tp > num_kv_heads)
    "Attention": {"input": {0: "concat_last", 1: "kv_cols", 2: "kv_cols"}, "output": "concat_last"},
    # rotary_emb(positions, q, k) rotates q and k in place and returns (q, k)
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
# studio_backend/dumps/formats/sglang_names.py; sglang/srt/models/qwen3_moe.py)
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

# Module-path fallback when the class is unknown, before the last-component names below.
PATH_CLASSES: list[tuple[re.Pattern[str], str]] = [
    # vLLM 0.32's router: one GateLinear registered as mlp.gate and mlp.experts.gate
    (re.compile(r"(^|\.)mlp\.experts\.gate$"), "GateLinear"),
]

# Module-name fallback (last path component) when the class is unknown.
NAME_CLASSES: dict[str, str] = {
    "qkv_proj": "QKVParallelLinear",
    "gate_up_proj": "MergedColumnParallelLinear",
    "o_proj": "RowParallelLinear",
    "down_proj": "RowParallelLinear",
    "gate": "ReplicatedLinear",
    "experts": "FusedMoE",  # partial_sum: the data tell FusedMoE from MoERunner
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

# Shared modules (shared.py). One object registered under two paths of a layer: (the path it
# is dumped as, the other path, its class, whether the dump must name that class). vLLM 0.32
# registers its router as mlp.gate and mlp.experts.gate and calls it inside the experts: msit
# dumps it as mlp.experts.gate (that name alone tells), msprobe as mlp.gate (class GateLinear).
KNOWN_ALIASES: list[tuple[str, str, str, bool]] = [
    ("mlp.experts.gate", "mlp.gate", "GateLinear", False),
    ("mlp.gate", "mlp.experts.gate", "GateLinear", True),
]
# Modules that modify inputs in place: (path regex, [(input idx, output idx) that alias]).
IN_PLACE: list[tuple[re.Pattern[str], list[tuple[int, int]]]] = [
    (re.compile(r"(^|\.)rotary_emb$"), [(1, 0), (2, 1)]),  # rotary_emb(positions, q, k) -> (q, k)
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
    for pattern, cls in PATH_CLASSES:
        if pattern.search(module):
            return cls, "name"
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
