"""The module tracer against a model whose call order and shapes are known by construction."""

from __future__ import annotations

import json

import torch

from studio_backend.trace.module_tracer import (
    counts_by_class,
    counts_by_module,
    format_counts,
    format_layer,
    layer_of,
    trace_modules,
)
from tests.trace.tiny import TinyDecoder

LAYER0 = [  # (module, class, input shapes, output shapes, depth)
    ("model.layers.0", "DecoderLayer", [[1, 7, 16]], [[1, 7, 16]], 2),
    ("model.layers.0.input_layernorm", "RMSNorm", [[1, 7, 16]], [[1, 7, 16]], 3),
    ("model.layers.0.self_attn", "Attention", [[1, 7, 16]], [[1, 7, 16]], 3),
    ("model.layers.0.self_attn.qkv_proj", "Linear", [[1, 7, 16]], [[1, 7, 48]], 4),
    ("model.layers.0.self_attn.rotary_emb", "RotaryEmbedding", [[1, 2, 7, 8]] * 2, [[1, 2, 7, 8]] * 2, 4),
    ("model.layers.0.self_attn.o_proj", "Linear", [[1, 7, 16]], [[1, 7, 16]], 4),
    ("model.layers.0.post_attention_layernorm", "RMSNorm", [[1, 7, 16]], [[1, 7, 16]], 3),
    ("model.layers.0.mlp", "MLP", [[1, 7, 16]], [[1, 7, 16]], 3),
    ("model.layers.0.mlp.gate_up_proj", "Linear", [[1, 7, 16]], [[1, 7, 48]], 4),
    ("model.layers.0.mlp.act_fn", "SiluAndMul", [[1, 7, 48]], [[1, 7, 24]], 4),
    ("model.layers.0.mlp.down_proj", "Linear", [[1, 7, 24]], [[1, 7, 16]], 4),
]  # fmt: skip


def _run(layers: int = 2, **kw):
    model = TinyDecoder(layers)
    ids = torch.arange(7).unsqueeze(0)
    with trace_modules(model, **kw) as t, torch.no_grad():
        model(ids)
    return t.calls


def test_call_order_shapes_and_depth_of_layer_0() -> None:
    calls = _run()
    assert [(c.module, c.module_class) for c in calls[:3]] == [
        ("", "TinyDecoder"),
        ("model", "Inner"),
        ("model.embed_tokens", "Embedding"),
    ]
    assert calls[2].in_dtypes == ["int64"] and calls[2].out_shapes == [[1, 7, 16]]
    got = [(c.module, c.module_class, c.in_shapes, c.out_shapes, c.depth) for c in calls[3:14]]
    assert got == LAYER0
    assert all(c.layer == 0 for c in calls[3:14])
    # layer 1 repeats layer 0 with its own paths; then the final norm and the head
    assert [c.module.replace("layers.1", "layers.0") for c in calls[14:25]] == [
        r[0] for r in LAYER0
    ]
    assert [c.module for c in calls[25:]] == ["model.norm", "lm_head"]
    assert calls[-1].out_shapes == [[1, 7, 32]]
    # parents: every call's parent is the innermost enclosing call
    by_seq = {c.seq: c for c in calls}
    assert all(by_seq[c.parent_seq].depth == c.depth - 1 for c in calls if c.parent_seq is not None)
    assert by_seq[calls[4].parent_seq].module == "model.layers.0"
    assert all(c.wall_us > 0 for c in calls)


def test_counts_per_class_and_module() -> None:
    calls = _run(layers=3)
    assert counts_by_class(calls) == [
        ("Linear", 13), ("RMSNorm", 7), ("Attention", 3), ("DecoderLayer", 3), ("MLP", 3),
        ("RotaryEmbedding", 3), ("SiluAndMul", 3), ("Embedding", 1), ("Inner", 1),
        ("TinyDecoder", 1),
    ]  # fmt: skip
    per_module = dict(counts_by_module(calls))
    assert per_module["RMSNorm:model.layers.2.input_layernorm"] == 1
    assert len(per_module) == len(calls)  # one forward: each module called once


def test_two_forwards_double_every_count() -> None:
    model = TinyDecoder(2)
    with trace_modules(model) as t, torch.no_grad():
        model(torch.arange(7).unsqueeze(0))
        model(torch.arange(1).unsqueeze(0))  # a decode step: one token
    once = dict(counts_by_class(_run(2)))
    assert dict(counts_by_class(t.calls)) == {k: 2 * v for k, v in once.items()}
    decode_qkv = [c for c in t.calls if c.module == "model.layers.1.self_attn.qkv_proj"][1]
    assert decode_qkv.in_shapes == [[1, 1, 16]] and decode_qkv.out_shapes == [[1, 1, 48]]


def test_class_filter_keeps_only_key_modules() -> None:
    calls = _run(classes=["RMSNorm", "Attention"])
    assert [c.module for c in calls] == [
        "model.layers.0.input_layernorm", "model.layers.0.self_attn",
        "model.layers.0.post_attention_layernorm", "model.layers.1.input_layernorm",
        "model.layers.1.self_attn", "model.layers.1.post_attention_layernorm", "model.norm",
    ]  # fmt: skip
    assert all(c.depth == 0 for c in calls)  # depth counts traced calls only


def test_hooks_are_removed_after_tracing() -> None:
    model = TinyDecoder(1)
    with trace_modules(model) as t, torch.no_grad():
        model(torch.arange(3).unsqueeze(0))
    n = len(t.calls)
    with torch.no_grad():
        model(torch.arange(3).unsqueeze(0))
    assert len(t.calls) == n
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_seed_style_text() -> None:
    calls = _run()
    text = format_counts(calls)
    assert text.splitlines()[:3] == ["Module call counts:", "  • Linear: 9", "  • RMSNorm: 5"]
    layer = format_layer(calls, 0).splitlines()
    assert layer[:4] == [
        "Call order of Transformer layer 0:",
        " 1. [RMSNorm] input_layernorm",
        "     Input:  (1, 7, 16)",
        "     Output: (1, 7, 16)",
    ]
    assert layer[10:13] == [
        " 4. [RotaryEmbedding] rotary_emb",
        "     Input:  (1, 2, 7, 8), (1, 2, 7, 8)",
        "     Output: (1, 2, 7, 8), (1, 2, 7, 8)",
    ]
    assert len(layer) == 1 + 3 * 10


def test_layer_of() -> None:
    assert layer_of("model.layers.12.mlp.experts") == 12
    assert layer_of("transformer.h.3.attn") == 3
    assert layer_of("model.norm") is None
    assert layer_of("model.layers_extra.1") is None


def test_stored_trace_reads_back(workspace) -> None:
    from studio_backend.trace import traces
    from studio_backend.trace.ingest import store_trace

    calls = _run()
    tid = store_trace(workspace, calls, name="tiny", model="TinyDecoder", prompt="ids 0..6")
    assert traces.list_traces(workspace)["n_calls"].tolist() == [len(calls)]
    assert traces.layers(workspace, tid) == [0, 1]
    df = traces.calls(workspace, tid, layer=0)
    assert list(df["module"]) == [r[0] for r in LAYER0]
    assert list(df["out_shapes"]) == [json.dumps(r[3]) for r in LAYER0]
    counts = traces.class_counts(workspace, tid)
    assert list(zip(counts["module_class"], counts["calls"], strict=True)) == counts_by_class(calls)


def test_page_opens_on_rank_0_of_the_newest_trace() -> None:
    from studio_backend.trace.traces import first_choice

    demo = ["demo (reference engine tp=2, rank 0)", "demo (reference engine tp=2, rank 1)"]
    assert first_choice(demo) == 0
    assert first_choice(["old (reference engine)", *demo]) == 1
    # the newest run wins even when an older run's rank 0 has the same shape of name
    assert first_choice([*demo, "m (reference engine)"]) == 2
    assert first_choice([*demo, *demo]) == 2
    v = ["x (vLLM tp=2, rank 1, step 0)", "x (vLLM tp=2, rank 0, step 0)"]
    assert first_choice(v) == 1
    assert first_choice(["solo (vLLM tp=2, rank 1, step 0)"]) == 0
    assert first_choice([]) == 0
