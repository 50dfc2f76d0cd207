"""SGLang tensor dumps of a tiny Qwen3-MoE, written from SGLang's public source only.

Independent of the studio's SGLang reader: built from REFERENCE.md section 1 and these files of
github.com/sgl-project/sglang (commits as stored by the search index):

* ``python/sglang/srt/debug_utils/tensor_dump_forward_hook.py`` (19fed5ff, 25b38cc2):
  ``TensorDumper.__init__`` names each process folder ``TP{tp_rank}_PP{pp_rank}_Rank{rank}_pid{pid}``
  with ``rank = tp_size * pp_rank + tp_rank``; ``dump_current_tensors`` saves the dict as
  ``Pass{id:05d}.pt``; ``add_tensor`` stores ``.cpu()`` tensors, turns a tuple/list into a list
  with ``None`` members DROPPED and unwraps a one-tensor list (so ``(out, None)`` of a linear is a
  bare tensor), stores ``LogitsProcessorOutput.next_token_logits`` and, for the ``ForwardBatch``
  given to ``model``, ``model.forward_batch_info.{input_ids,seq_lens,positions}``.
  ``_add_hook_recursive`` walks ``_modules`` (no de-duplication) and hooks leaf modules plus the
  top-level ``model``; ``_dump_hook`` of ``model`` adds the batch info, WRITES the pass file and
  only then adds ``model``'s own output, so ``model`` and ``logits_processor`` of pass N land in
  ``Pass{N+1}`` and those of the last pass are never written.
* ``python/sglang/srt/debug_utils/dumper.py`` (00d35548): ``_Dumper._dump_single`` writes
  ``{dir}/{exp_name}/`` + ``"___".join(f"{k}={v}")`` of ``step, rank, dump_index, name,
  recompute_status, <ctx>`` + ``.pt`` holding ``{"value": tensor, "meta": {those keys,
  world_rank, world_size, sglang_parallel_info, tokenizer_path}}``
  (``_compute_static_meta``, ``_SGLangPlugin.collect_parallel_info``); ``dump_index`` counts
  saved files from 1 per process; ``_NonIntrusiveDumper`` hooks ``named_modules()`` (shared
  modules once, under their first name), names outputs ``non_intrusive__<module>.output[.i]``,
  dumps ``ForwardBatch`` of the root as the core fields ``input_ids, seq_lens, positions,
  req_pool_indices`` and sets ``layer_id`` ctx inside ``model.layers.N`` (cleared before the
  layer's own output is dumped). ``ModelRunner.forward`` (model_runner.py) calls
  ``dumper.step()`` after each forward, so step N is forward N.
* ``python/sglang/srt/models/qwen3_moe.py`` (008af3a6) and ``qwen2_moe.py`` (0115497d): module
  names and calls; ``o_proj`` is a ``RowParallelLinear(reduce_results=False)`` whose all-reduce
  happens in ``LayerCommunicator.prepare_mlp`` (layers/communicator.py) before
  ``post_attention_layernorm``, so ``o_proj``'s dumped output is a PARTIAL sum per rank;
  ``Qwen3MoeSparseMoeBlock.forward_normal`` all-reduces after ``experts`` (``FusedMoE``,
  ``reduce_results=False``: a partial sum per rank); ``mlp.topk`` returns
  ``StandardTopKOutput(topk_weights, topk_ids, router_logits)`` (layers/moe/topk.py).
  ``FusedMoE`` holds ``quant_method`` (an ``UnquantizedFusedMoEMethod``, an nn.Module called via
  ``.forward`` not ``__call__``, layers/quantization/unquant.py), so the hook dump has NO
  ``mlp.experts`` entry; ``lm_head`` is never called as a module. ``get_rope``
  (layers/rotary_embedding/factory.py) returns ONE shared ``RotaryEmbedding``: in the hook dump
  every ``model.layers.N.self_attn.rotary_emb`` key holds the LAST layer's (q, k); the dumper
  writes it under ``model.layers.0...`` with the calling layer in ``layer_id``.
  ``apply_qk_norm`` (models/utils.py) calls ``q_norm``/``k_norm`` on ``[tokens*heads, head_dim]``
  (the fused in-place kernel needs head_dim 64/128/256, ours is 16). QKV sharding: rank r holds
  q heads ``r*nh/tp..``, kv head ``r // (tp/nkv)`` when tp > nkv (replicated).

Assumed launch: ``python -m sglang.launch_server --model-path <root> --tp <tp> --dtype float32
--disable-cuda-graph --skip-server-warmup`` plus ``--debug-tensor-dump-output-folder <root>/dump``
(hook) or ``DUMPER_ENABLE=1 DUMPER_DIR=<root>/dumper DUMPER_NON_INTRUSIVE_MODE=all
DUMPER_FILTER="'inputs.' not in name"`` (dumper), one request: a 7-token prompt, greedy decode.
The model directory is ``<root>`` itself: ``<root>/config.json`` (HF hub spelling). Tensors are
float32 on CPU here (real dumper files hold CUDA tensors: load with ``map_location="cpu"``);
pids are fixed (4242 + rank). Values come from a float64 forward pass; shards are exact slices of
it, partial sums (``o_proj``, ``self_attn``, ``mlp.experts``) sum to the truth within float32
rounding (rtol 1e-5, atol 1e-6).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

CONFIG = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "num_experts": 8, "num_experts_per_tok": 2,
    "moe_intermediate_size": 32, "intermediate_size": 128, "vocab_size": 128,
    "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None,
    "max_position_embeddings": 512, "attention_bias": False, "attention_dropout": 0.0,
    "tie_word_embeddings": False, "torch_dtype": "float32", "bos_token_id": 1,
    "eos_token_id": 2, "initializer_range": 0.02, "use_cache": True,
    "use_sliding_window": False, "sliding_window": None, "max_window_layers": 2,
    "output_router_logits": False, "router_aux_loss_coef": 0.001,
}  # fmt: skip
H, L, NH, NKV, D = 64, 2, 4, 2, 16
E, K, FF, V = 8, 2, 32, 128  # experts, top-k, moe_intermediate, vocab
PROMPT_LEN, PID0 = 7, 4242
EXP_NAME = "dump_20261206_120000_000000"  # dumper's default form: dump_<UTC time>_<ms><rand>
DUMPER_FILTER = "'inputs.' not in name"


@dataclass
class Spec:
    """One output tensor: its unsharded value and how SGLang's TP ranks hold it."""

    kind: str  # rep | qkv | q_heads | kv_heads | q_rows | kv_rows | o_partial | moe_partial
    full: torch.Tensor  # float64 (or integer) truth
    extra: tuple = ()


@dataclass
class Event:
    """A module finishing its forward, in execution order."""

    name: str
    specs: list[Spec]
    layer: int | None = None  # dumper ctx layer_id
    leaf: bool = True  # hooked by tensor_dump_forward_hook
    lpo: bool = False  # output is a LogitsProcessorOutput
    core: str | None = None  # an INPUT the dumper saves as a core field (``positions=`` kwarg)


# ---------------------------------------------------------------- the model (float64 oracle)


def _weights(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def n(*shape, scale=1.0):  # float32-exact values, held as float64 for the oracle pass
        return (torch.randn(*shape, generator=g) * scale).double()

    w = {"model.embed_tokens.weight": n(V, H)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = n(NH * D, H, scale=H**-0.5)
        w[p + "self_attn.k_proj.weight"] = n(NKV * D, H, scale=H**-0.5)
        w[p + "self_attn.v_proj.weight"] = n(NKV * D, H, scale=H**-0.5)
        w[p + "self_attn.o_proj.weight"] = n(H, NH * D, scale=(NH * D) ** -0.5)
        for m, dim in (("self_attn.q_norm", D), ("self_attn.k_norm", D)):
            w[p + m + ".weight"] = (1 + n(dim, scale=0.1)).float().double()
        for m in ("input_layernorm", "post_attention_layernorm"):
            w[p + m + ".weight"] = (1 + n(H, scale=0.1)).float().double()
        w[p + "mlp.gate.weight"] = n(E, H, scale=H**-0.5)
        for e in range(E):
            w[p + f"mlp.experts.{e}.gate_proj.weight"] = n(FF, H, scale=H**-0.5)
            w[p + f"mlp.experts.{e}.up_proj.weight"] = n(FF, H, scale=H**-0.5)
            w[p + f"mlp.experts.{e}.down_proj.weight"] = n(H, FF, scale=FF**-0.5)
    w["model.norm.weight"] = (1 + n(H, scale=0.1)).float().double()
    w["lm_head.weight"] = n(V, H, scale=H**-0.5)
    return w


def _rms(x, w):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + CONFIG["rms_norm_eps"]) * w


def _rope(x, pos):  # neox style on [T, heads*D]
    inv = 1.0 / CONFIG["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = pos.to(torch.float64)[:, None] * inv[None, :]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x = x.view(x.shape[0], -1, D)
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).reshape(x.shape[0], -1)


def _expert(w, p, e, x, cols=slice(None)):
    gate = x @ w[p + f"mlp.experts.{e}.gate_proj.weight"][cols].T
    up = x @ w[p + f"mlp.experts.{e}.up_proj.weight"][cols].T
    return (torch.nn.functional.silu(gate) * up) @ w[p + f"mlp.experts.{e}.down_proj.weight"][
        :, cols
    ].T


def _moe(w, p, x, tw, ti, cols=slice(None)):
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for k in range(K):
            out[t] += tw[t, k] * _expert(w, p, int(ti[t, k]), x[t : t + 1], cols)[0]
    return out


def _forward(w, ids, pos, cache) -> tuple[list[Event], torch.Tensor]:
    """One SGLang forward (extend or decode); returns module events and next-token logits."""
    rep = lambda t: Spec("rep", t)  # noqa: E731
    x = w["model.embed_tokens.weight"][ids]
    ev = [Event("model.embed_tokens", [rep(x)])]
    res = None
    for i in range(L):
        p, a = f"model.layers.{i}.", f"model.layers.{i}.self_attn."
        if res is None:  # LayerCommunicator.prepare_attn: first layer has no residual yet
            res, h = x, _rms(x, w[p + "input_layernorm.weight"])
            ev.append(Event(p + "input_layernorm", [rep(h)], i))
        else:
            res = x + res
            h = _rms(res, w[p + "input_layernorm.weight"])
            ev.append(Event(p + "input_layernorm", [rep(h), rep(res)], i))
        # self_attn(positions=..., ...): the dumper's pre-hook saves the kwarg as core "positions"
        ev.append(Event(a + "inputs.positions", [rep(pos)], i, leaf=False, core="positions"))
        q, k, v = (h @ w[a + f"{n}_proj.weight"].T for n in "qkv")
        ev.append(Event(a + "qkv_proj", [Spec("qkv", torch.cat([q, k, v], -1))], i))
        qn = _rms(q.reshape(-1, D), w[a + "q_norm.weight"])
        kn = _rms(k.reshape(-1, D), w[a + "k_norm.weight"])
        ev += [Event(a + "q_norm", [Spec("q_rows", qn)], i)]
        ev += [Event(a + "k_norm", [Spec("kv_rows", kn)], i)]
        qr, kr = _rope(qn.view(len(ids), -1), pos), _rope(kn.view(len(ids), -1), pos)
        ev.append(Event(a + "rotary_emb", [Spec("q_heads", qr), Spec("kv_heads", kr)], i))
        cache[i][0].append(kr)
        cache[i][1].append(v)
        ks, vs = torch.cat(cache[i][0]), torch.cat(cache[i][1])
        qh, kh, vh = qr.view(len(ids), NH, D), ks.view(-1, NKV, D), vs.view(-1, NKV, D)
        kh, vh = kh.repeat_interleave(NH // NKV, 1), vh.repeat_interleave(NH // NKV, 1)
        s = torch.einsum("thd,shd->hts", qh, kh) / math.sqrt(D)
        s = s.masked_fill(torch.arange(len(ks))[None, :] > pos[:, None], float("-inf"))
        att = torch.einsum("hts,shd->thd", s.softmax(-1), vh).reshape(len(ids), NH * D)
        ev.append(Event(a + "attn", [Spec("q_heads", att)], i))
        o = att @ w[a + "o_proj.weight"].T
        wo = w[a + "o_proj.weight"]
        ev += [Event(a + "o_proj", [Spec("o_partial", o, (att, wo))], i)]
        ev += [Event(p + "self_attn", [Spec("o_partial", o, (att, wo))], i, leaf=False)]
        res = o + res
        h2 = _rms(res, w[p + "post_attention_layernorm.weight"])
        ev.append(Event(p + "post_attention_layernorm", [rep(h2), rep(res)], i))
        logits = h2 @ w[p + "mlp.gate.weight"].T
        tw, ti = logits.softmax(-1).topk(K, -1)
        tw = tw / tw.sum(-1, keepdim=True)  # norm_topk_prob
        moe = _moe(w, p, h2, tw, ti)
        ev.append(Event(p + "mlp.gate", [rep(logits)], i))
        topk = [rep(tw.float()), rep(ti.to(torch.int32)), rep(logits)]
        ev.append(Event(p + "mlp.topk", topk, i))
        ev.append(
            Event(p + "mlp.experts", [Spec("moe_partial", moe, (w, p, h2, tw, ti))], i, False)
        )
        ev.append(Event(p + "mlp", [rep(moe)], i, leaf=False))
        ev.append(Event(f"model.layers.{i}", [rep(moe), rep(res)], None, leaf=False))
        x = moe
    res = x + res
    normed = _rms(res, w["model.norm.weight"])
    logits = normed[-1:] @ w["lm_head.weight"].T  # LogitsProcessor: last token of the request
    ev += [Event("model.norm", [rep(normed), rep(res)]), Event("model", [rep(normed)], leaf=False)]
    ev += [Event("logits_processor", [rep(logits)], lpo=True)]
    ev += [Event("", [rep(logits)], leaf=False, lpo=True)]
    return ev, logits


def _run(seed: int, n: int):
    """Prefill a seeded 7-token prompt, then greedy 1-token decodes: n forwards in all."""
    w = _weights(seed)
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.randint(3, V, (PROMPT_LEN,), generator=g)
    cache = [([], []) for _ in range(L)]
    passes, seq, gen = [], PROMPT_LEN, []
    pos = torch.arange(PROMPT_LEN)
    for _ in range(n):
        events, logits = _forward(w, ids, pos, cache)
        batch = {"input_ids": ids, "seq_lens": torch.tensor([seq]), "positions": pos}
        passes.append((events, batch))
        ids = logits.argmax(-1)  # greedy sampler; one request
        gen.append(int(ids[0]))
        seq += 1
        pos = torch.tensor([seq - 1])
    prompt = passes[0][1]["input_ids"].tolist()
    return w, passes, {"prompt": prompt, "generated": gen}


# ---------------------------------------------------------------- TP sharding as SGLang does it


def q_heads_of_rank(r: int, tp: int) -> list[int]:
    return list(range(r * NH // tp, (r + 1) * NH // tp))


def kv_heads_of_rank(r: int, tp: int) -> list[int]:
    """QKVParallelLinear: partition KV heads, or replicate when tp > num_kv_heads."""
    if tp <= NKV:
        return list(range(r * NKV // tp, (r + 1) * NKV // tp))
    return [r // (tp // NKV)]


def _cols(t, heads):
    return torch.cat([t[..., h * D : (h + 1) * D] for h in heads], -1)


def _rows(t, heads, n):
    return t.view(-1, n, D)[:, heads].reshape(-1, D)


def shard(spec: Spec, r: int, tp: int) -> torch.Tensor:
    """The tensor rank r of tp computes for this output."""
    qh, kvh, k = q_heads_of_rank(r, tp), kv_heads_of_rank(r, tp), spec.kind
    if k == "rep":
        out = spec.full
    elif k == "qkv":
        q, kk, v = spec.full.split([NH * D, NKV * D, NKV * D], -1)
        out = torch.cat([_cols(q, qh), _cols(kk, kvh), _cols(v, kvh)], -1)
    elif k in ("q_heads", "kv_heads"):
        out = _cols(spec.full, qh if k == "q_heads" else kvh)
    elif k in ("q_rows", "kv_rows"):
        out = _rows(spec.full, qh, NH) if k == "q_rows" else _rows(spec.full, kvh, NKV)
    elif k == "o_partial":  # RowParallelLinear without reduce: this rank's heads only
        att, wo = spec.extra
        out = _cols(att, qh) @ _cols(wo, qh).T
    elif k == "moe_partial":  # FusedMoE: this rank's slice of every expert's intermediate dim
        w, p, x, tw, ti = spec.extra
        out = _moe(w, p, x, tw, ti, slice(r * FF // tp, (r + 1) * FF // tp))
    else:
        raise ValueError(k)
    return _store(out)


def _store(t: torch.Tensor) -> torch.Tensor:
    return (t.float() if t.dtype == torch.float64 else t).contiguous().clone()


def _write_config(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(CONFIG, indent=2))
    return root / "config.json"


def _result(fmt, root, tp, n, dump_dir, truth, entries, files, w, tokens):
    return {
        "format": fmt, "tp": tp, "forwards": n, "root": root, "dump_dir": dump_dir,
        "config_path": root / "config.json", "config": dict(CONFIG), "truth": truth,
        "entries": entries, "files": sorted(files), "tokens": tokens,
        "weights": {k: v.float() for k, v in w.items()},
    }  # fmt: skip


# ---------------------------------------------------------------- --debug-tensor-dump-output-folder


def write_hook_dump(root: Path, *, tp: int, passes: int = 2, seed: int = 0) -> dict:
    """Write ``<root>/dump/TP{r}_PP0_Rank{r}_pid{4242+r}/Pass{N:05d}.pt`` and ``<root>/config.json``.

    ``truth[(pass, key)]`` (or ``(pass, key, i)`` for list values) is the unsharded tensor for
    every dict key written; ``pass`` is the forward that computed it (``model`` and
    ``logits_processor`` of pass N sit in ``Pass{N+1}``: see ``entries[k]["file_pass"]``).
    """
    w, fwd, tokens = _run(seed, passes)
    plan, pending = [], {}  # plan: [(file_pass, {key: (truth_pass, [Spec])})]
    for p, (events, batch) in enumerate(fwd):
        for ev in events:
            if ev.name == "model":  # _dump_hook with do_dump: batch info, save, then own output
                for f in ("input_ids", "seq_lens", "positions"):
                    pending[f"model.forward_batch_info.{f}"] = (p, [Spec("rep", batch[f])])
                plan.append((p, pending))
                pending = {"model": (p, ev.specs)}
            elif ev.leaf and ev.name.endswith("rotary_emb"):  # one shared module, L hooks
                for j in range(L):
                    pending[f"model.layers.{j}.self_attn.rotary_emb"] = (p, ev.specs)
            elif ev.leaf:
                pending[ev.name] = (p, ev.specs)
    truth, entries, files = {}, {}, []
    for file_pass, content in plan:
        for key, (p, specs) in content.items():
            for i, s in enumerate(specs):
                tk = (p, key) if len(specs) == 1 else (p, key, i)
                truth[tk] = _store(s.full)
                index = None if len(specs) == 1 else i
                entries[tk] = {
                    "file_pass": file_pass,
                    "key": key,
                    "index": index,
                    "sharding": s.kind,
                }
    dump_dir = root / "dump"
    for r in range(tp):
        folder = dump_dir / f"TP{r}_PP0_Rank{r}_pid{PID0 + r}"
        folder.mkdir(parents=True, exist_ok=True)
        for file_pass, content in plan:
            d = {}
            for key, (_, specs) in content.items():
                vals = [shard(s, r, tp) for s in specs]
                d[key] = vals[0] if len(vals) == 1 else vals
            path = folder / f"Pass{file_pass:05d}.pt"
            torch.save(d, path)
            files.append(path)
    _write_config(root)
    return _result(
        "sglang_tensor_dump", root, tp, passes, dump_dir, truth, entries, files, w, tokens
    )


# ---------------------------------------------------------------- debug_utils/dumper.py


def _parallel_info(r: int, tp: int) -> dict:
    """_SGLangPlugin.collect_parallel_info for plain TP (no DP attention, EP or PP)."""
    return {
        "tp_rank": r, "tp_size": tp, "pp_rank": 0, "pp_size": 1,
        "moe_ep_rank": 0, "moe_ep_size": 1, "moe_tp_rank": r, "moe_tp_size": tp,
        "moe_dp_rank": 0, "moe_dp_size": 1, "enable_dp_attention": False,
        "attn_tp_rank": r, "attn_tp_size": tp, "attn_dp_rank": 0, "attn_dp_size": 1,
        "local_attn_dp_rank": 0, "local_attn_dp_size": 1, "attn_cp_rank": 0, "attn_cp_size": 1,
    }  # fmt: skip


def _tags(name: str, layer: int | None) -> dict:
    """dumper._dump_inner: name, recompute_status, then the ctx (``layer_id``)."""
    tags = {"name": name, "recompute_status": "disabled"}
    return tags if layer is None else {**tags, "layer_id": layer}


def _dumper_records(events, batch):
    """(name tag, layer_id, spec, truth module, index) per saved dump, in dump_index order."""
    recs = [
        (f, None, Spec("rep", batch[f]), f, None) for f in ("input_ids", "seq_lens", "positions")
    ]
    recs.append(
        ("req_pool_indices", None, Spec("rep", torch.tensor([0])), "req_pool_indices", None)
    )
    for ev in events:
        # named_modules() keeps the shared rotary_emb once, under layer 0's path
        mod = "model.layers.0.self_attn.rotary_emb" if ev.name.endswith("rotary_emb") else ev.name
        base = "non_intrusive__" + ".".join(x for x in (mod, "output") if x)
        for i, s in enumerate(ev.specs):
            if ev.core:
                tag, idx = ev.core, None
            elif ev.lpo:
                tag, idx = base + ".next_token_logits", None
            else:
                tag, idx = (base, None) if len(ev.specs) == 1 else (f"{base}.{i}", i)
            recs.append((tag, ev.layer, s, ev.name, idx))
    return recs


class _Tags(dict):
    def __missing__(self, key):  # dumper._DefaultNoneDict: unknown tags read as None
        return None


def _keep(expr: str | None, tags: dict) -> bool:
    """dumper._evaluate_filter: a Python expression over the tags, ``search``/``match`` = re."""
    if expr is None:
        return True
    ns = _Tags(tags)
    ns.update(search=re.search, match=re.match)
    return bool(eval(expr, {"__builtins__": {}}, ns))  # noqa: S307 - our own test constant


def write_dumper_dump(
    root: Path, *, tp: int, steps: int = 2, seed: int = 0, dumper_filter: str | None = DUMPER_FILTER
) -> dict:
    """Write ``<root>/dumper/<exp_name>/step=..___rank=..___dump_index=..___name=...pt``.

    ``truth[(step, module)]`` / ``(step, module, i)``: module is the hooked module's name
    (``""`` is the root ``Qwen3MoeForCausalLM``, the core fields use their own name, the shared
    ``rotary_emb`` is keyed by its CALLING layer); ``entries[k]`` gives the written ``name`` tag,
    ``layer_id`` and sharding kind.
    """
    w, fwd, tokens = _run(seed, steps)
    recs = [
        [x for x in _dumper_records(*f) if _keep(dumper_filter, _tags(x[0], x[1]))] for f in fwd
    ]
    truth, entries, files = {}, {}, []
    for step, step_recs in enumerate(recs):
        for tag, layer, s, mod, idx in step_recs:
            tk = (step, mod) if idx is None else (step, mod, idx)
            truth[tk] = _store(s.full)
            entries[tk] = {"name": tag, "layer_id": layer, "sharding": s.kind}
    out_dir = root / "dumper" / EXP_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in range(tp):
        static = {"world_rank": r, "world_size": tp, "sglang_parallel_info": _parallel_info(r, tp)}
        static["tokenizer_path"] = str(root)
        dump_index = 0
        for step, step_recs in enumerate(recs):
            for tag, layer, s, _, _ in step_recs:
                dump_index += 1
                kw = {"step": step, "rank": r, "dump_index": dump_index, **_tags(tag, layer)}
                path = out_dir / ("___".join(f"{k}={v}" for k, v in kw.items()) + ".pt")
                torch.save({"value": shard(s, r, tp), "meta": {**kw, **static}}, path)
                files.append(path)
    _write_config(root)
    res = _result("sglang_dumper", root, tp, steps, out_dir, truth, entries, files, w, tokens)
    res["env"] = {
        "DUMPER_ENABLE": "1", "DUMPER_DIR": str(root / "dumper"),
        "DUMPER_NON_INTRUSIVE_MODE": "all", "DUMPER_FILTER": dumper_filter,
    }  # fmt: skip
    return res
