"""How module names of different engines and dump tools line up (data tables, read by align.py).

Names reach the workspace as the dump tool wrote them (msit drops its ``root.`` prefix at
ingest, msprobe's ``Module.<path>.<Class>.forward`` is cut to ``<path>``; SGLang's hook and
dumper use the model's dotted path). Two runs name the same computation differently when one is
a vLLM / SGLang model (fused ``qkv_proj`` and ``gate_up_proj``, ``MoERunner`` / ``FusedMoE``
experts called by keyword) and the other a Hugging Face model (``q_proj`` / ``k_proj`` /
``v_proj``, ``gate_proj`` / ``up_proj``, ``Qwen3MoeExperts`` called positionally). The tables
below map both onto one canonical key: (module path without wrapper prefixes, io, index, part).
"""

from __future__ import annotations

import re

# Leading path components that only wrap the model (msit's root, DDP's module, the causal LM's
# inner model, a multimodal wrapper's language model): dropped from the canonical path.
WRAPPERS = frozenset({"root", "module", "model", "language_model"})

# Whole-path renames after the wrappers are dropped (regex, replacement): SGLang's hook records
# the batch as ``model.forward_batch_info.<field>``, its dumper as ``<field>``.
RENAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^forward_batch_info\.(\w+)$"), r"\1"),
)

# A run's naming convention, decided from its module names (first match wins).
#   fused: vLLM / SGLang / the reference engine (fused projections, fused residual add)
#   split: Hugging Face transformers (separate projections, residual added in the layer)
CONVENTION_EVIDENCE: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("fused", re.compile(r"(^|\.)(qkv_proj|gate_up_proj)$")),
    ("split", re.compile(r"(^|\.)(q_proj|k_proj|v_proj|gate_proj|up_proj)$")),
)

# Split (Hugging Face) projections -> (fused module leaf, part of its output). Their inputs are
# the fused module's input; only the first of them (``alias_of`` None) stands for it, the others
# are the same tensor and are recorded as duplicates.
SPLIT_TO_FUSED: dict[str, tuple[str, str, str | None]] = {
    # leaf: (fused leaf, part, input alias_of)
    "q_proj": ("qkv_proj", "q", None),
    "k_proj": ("qkv_proj", "k", "q_proj"),
    "v_proj": ("qkv_proj", "v", "q_proj"),
    "gate_proj": ("gate_up_proj", "gate", None),
    "up_proj": ("gate_up_proj", "up", "gate_proj"),
}

# Keyword arguments (msprobe dumps them with index -1 and their name) that are a positional
# argument under another engine: (module leaf, kwarg) -> position.
KWARG_POSITIONS: dict[tuple[str, str], int] = {
    # vLLM: experts(hidden_states=h, router_logits=l); HF: experts(h, top_k_index, top_k_weights)
    ("experts", "hidden_states"): 0,
    # vLLM / SGLang: self_attn(positions=p, hidden_states=h); HF: self_attn(hidden_states=h, ...)
    ("self_attn", "hidden_states"): 0,
    # the model itself: vLLM model(input_ids, positions); HF model(input_ids=..., position_ids=...)
    ("", "input_ids"): 0,
    ("", "position_ids"): 1,
}


# Tensors whose MEANING depends on the convention: compared only between runs of the same
# convention, otherwise listed as unaligned with the reason. (leaf regex, io, index or None for
# all indices, reason)
CONVENTION_SPECIFIC: tuple[tuple[re.Pattern[str], str, int | None, str], ...] = (
    (re.compile(r"(^|\.)layers\.\d+$"), "output", None,
     "a vLLM / SGLang decoder layer returns (MLP output, residual); a Hugging Face layer returns "
     "their sum"),
    (re.compile(r"(^|\.)layers\.\d+$"), "input", None,
     "a vLLM / SGLang decoder layer takes (positions, hidden, residual); a Hugging Face layer "
     "takes the summed hidden state"),
    (re.compile(r"(^|\.)(input_layernorm|post_attention_layernorm|norm)$"), "input", None,
     "vLLM / SGLang RMSNorm adds the residual itself (inputs: hidden, residual); Hugging Face "
     "passes the sum"),
    (re.compile(r"(^|\.)(input_layernorm|post_attention_layernorm|norm)$"), "output", 1,
     "the residual sum is an output only of the fused-residual RMSNorm"),
    (re.compile(r"(^|\.)mlp\.act_fn$"), "input", None,
     "vLLM / SGLang SiluAndMul takes [gate | up]; a Hugging Face dense MLP's act_fn takes gate"),
    (re.compile(r"(^|\.)mlp\.act_fn$"), "output", None,
     "vLLM / SGLang SiluAndMul returns silu(gate) * up; a Hugging Face act_fn returns silu(gate)"),
    (re.compile(r"(^|\.)rotary_emb$"), "input", None,
     "vLLM rotary_emb(positions, q, k) rotates q and k; Hugging Face rotary_emb returns cos, sin"),
    (re.compile(r"(^|\.)rotary_emb$"), "output", None,
     "vLLM rotary_emb returns the rotated q, k; Hugging Face rotary_emb returns cos, sin"),
)  # fmt: skip

# Forward order inside a decoder layer: (path below ``layers.N``, io or '*' for both). A module
# listed once with '*' has its input right before its output; a container is listed twice, its
# input before its children and its output after them. Unknown paths sort just before the
# layer's output, by name.
LAYER_ORDER: tuple[tuple[str, str], ...] = (
    ("", "input"),
    ("input_layernorm", "*"),
    ("self_attn", "input"),
    ("self_attn.qkv_proj", "*"),
    ("self_attn.q_norm", "*"),
    ("self_attn.k_norm", "*"),
    ("self_attn.rotary_emb", "*"),
    ("self_attn.attn", "*"),
    ("self_attn.o_proj", "*"),
    ("self_attn", "output"),
    ("post_attention_layernorm", "*"),
    ("mlp", "input"),
    ("mlp.gate", "*"),
    ("mlp.topk", "*"),
    ("mlp.experts.gate", "*"),
    ("mlp.experts", "input"),
    ("mlp.experts.act_fn", "*"),
    ("mlp.experts", "output"),
    ("mlp.shared_expert", "*"),
    ("mlp.gate_up_proj", "*"),
    ("mlp.act_fn", "*"),
    ("mlp.down_proj", "*"),
    ("mlp", "output"),
)
# Outside the layers: before them, and after them (anything else sorts after these).
TOP_BEFORE: tuple[str, ...] = ("", "embed_tokens", "rotary_emb")
TOP_AFTER: tuple[str, ...] = ("norm", "lm_head", "logits_processor")

# Containers: their output is their children's work (a decoder layer, attention, the MLP / MoE
# block, the model). They are compared, but not ranked by contribution when children are.
CONTAINERS = re.compile(r"^$|(^|\.)(layers\.\d+|self_attn|mlp)$")

# Tensors a dump FORMAT records in its own way: compared only between runs of that same format,
# otherwise listed as unaligned with the reason. (format, path regex, reason)
FORMAT_SPECIFIC: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("sglang_hook", re.compile(r"(^|\.)rotary_emb$"),
     "SGLang shares one RotaryEmbedding: its hook stores the LAST layer's (q, k) under every "
     "layer's name"),
    ("msit", re.compile(r"(^|\.)rotary_emb$"),
     "vLLM shares one rotary_emb: msit names it after the last layer's path and each call "
     "overwrites the files"),
)  # fmt: skip
