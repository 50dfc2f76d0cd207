"""SGLang's OWN dump code writes the files; the studio reads back what each module returned.

SGLang does not install here (CUDA kernels), but its two writers are plain Python:
``debug_utils/tensor_dump_forward_hook.py`` and ``debug_utils/dumper.py``. Point
``STUDIO_SGLANG_SRC`` at a folder holding ``sglang/srt/debug_utils/`` (an unzipped sglang wheel,
e.g. ``pip download sglang --no-deps`` then unzip) and this test runs them, unmodified, on a
tiny single-rank model with Qwen3-MoE's module names and call conventions; only the framework
types they ``isinstance`` against (ForwardBatch, LogitsProcessorOutput, ...) and the parallel
state are stubbed. Truth: every module's output, captured by separate forward hooks.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from studio_backend.dumps import query
from studio_backend.dumps.ingest import ingest_dump

# `make test` fetches the writers into .cache/sglang-src (scripts/fetch_sglang_src.sh).
SRC = os.environ.get(
    "STUDIO_SGLANG_SRC", str(Path(__file__).resolve().parents[2] / ".cache" / "sglang-src")
)
DEBUG = Path(SRC) / "sglang" / "srt" / "debug_utils"
pytestmark = pytest.mark.skipif(
    not (DEBUG / "dumper.py").is_file(), reason="set STUDIO_SGLANG_SRC to an unzipped sglang wheel"
)

H, NH, NKV, D, E, T = 32, 4, 2, 8, 4, 5


@dataclass
class LogitsProcessorOutput:
    next_token_logits: torch.Tensor


@dataclass
class ForwardBatch:
    input_ids: torch.Tensor
    seq_lens: torch.Tensor
    positions: torch.Tensor
    req_pool_indices: torch.Tensor | None = None
    rids: list | None = None


class _Opaque:  # framework types the writers only test with isinstance()
    tensors: dict = {}


def _sglang_modules(monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, types.ModuleType]:
    parallel = types.SimpleNamespace(**{
        k: v for k in ("tp", "pp", "moe_ep", "moe_tp", "moe_dp", "attn_tp", "attn_dp", "attn_cp")
        for k, v in ((f"{k}_rank", 0), (f"{k}_size", 1))
    })  # fmt: skip
    stubs = {
        "sglang.srt.layers.logits_processor": {"LogitsProcessorOutput": LogitsProcessorOutput},
        "sglang.srt.model_executor.forward_batch_info": {
            "ForwardBatch": ForwardBatch, "PPProxyTensors": type("PPProxyTensors", (_Opaque,), {}),
        },
        "sglang.srt.managers.io_struct": {"sock_recv": None, "sock_send": None, "wrap_as_pickle": None},
        "sglang.srt.runtime_context": {"get_parallel": lambda: parallel, "get_server_args": lambda: None,
                                       "get_serving": lambda: None},
        "sglang.srt.utils": {"get_device": lambda *a, **k: "cpu"},
        "sglang.srt.distributed": {},
        "sglang.srt.layers.dp_attention": {"get_moe_cp_size": lambda: 1,
                                           "is_dp_attention_enabled": lambda: False},
        "sglang.srt.layers.layer_boundary.output": {"UnreducedOutput": type("U", (_Opaque,), {})},
        "sglang.srt.layers.layer_boundary.residual.stream": {"OwedOutput": type("O", (_Opaque,), {})},
        "zmq": {},
    }  # fmt: skip
    for name in [*stubs, "sglang", "sglang.srt", "sglang.srt.layers", "sglang.srt.managers",
                 "sglang.srt.model_executor", "sglang.srt.layers.layer_boundary",
                 "sglang.srt.layers.layer_boundary.residual"]:  # fmt: skip
        if name in sys.modules and name not in stubs:
            continue
        m = types.ModuleType(name)
        m.__path__ = []  # type: ignore[attr-defined]
        m.__dict__.update(stubs.get(name, {}))
        monkeypatch.setitem(sys.modules, name, m)
    for name in stubs:  # parents expose children as attributes (``from sglang.srt import x``)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            monkeypatch.setattr(sys.modules[parent], child, sys.modules[name], raising=False)
    out = []
    for mod in ("tensor_dump_forward_hook", "dumper"):
        spec = importlib.util.spec_from_file_location(
            f"sglang.srt.debug_utils.{mod}", DEBUG / f"{mod}.py"
        )
        m = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        monkeypatch.setitem(sys.modules, spec.name, m)  # type: ignore[union-attr]
        spec.loader.exec_module(m)  # type: ignore[union-attr]
        out.append(m)
    return out[0], out[1]


class _Lin(nn.Module):  # SGLang linears return (output, bias)
    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(o, i) * i**-0.5, requires_grad=False)

    def forward(self, x):
        return x @ self.weight.T, None


class _Norm(nn.Module):  # RMSNorm: with a residual returns (normed, residual)
    def forward(self, x, residual=None):
        r = x if residual is None else x + residual
        y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + 1e-6)
        return y if residual is None else (y, r)


class _Rope(nn.Module):
    def forward(self, positions, q, k):
        return q * positions[:, None].cos(), k * positions[:, None].sin()


class _Attn(nn.Module):
    def forward(self, q, k, v, forward_batch):
        return q + v.repeat(1, NH // NKV)


class _TopK(nn.Module):
    def forward(self, hidden_states, router_logits):
        w, i = router_logits.softmax(-1).topk(2)
        return w, i.to(torch.int32), router_logits


class _Experts(nn.Module):  # FusedMoE holds its quant_method module: not a leaf
    def __init__(self) -> None:
        super().__init__()
        self.quant_method = nn.Identity()

    def forward(self, hidden_states, topk_output):
        return hidden_states * topk_output[0][:, :1]


class _SelfAttn(nn.Module):
    def __init__(self, rope: nn.Module) -> None:
        super().__init__()
        self.qkv_proj, self.o_proj = _Lin(H, (NH + 2 * NKV) * D), _Lin(NH * D, H)
        self.q_norm, self.k_norm, self.rotary_emb, self.attn = _Norm(), _Norm(), rope, _Attn()

    def forward(self, positions, hidden_states, forward_batch):
        qkv, _ = self.qkv_proj(hidden_states)
        q, k, v = qkv.split([NH * D, NKV * D, NKV * D], -1)
        q = self.q_norm(q.reshape(-1, D)).view(q.shape)  # models/utils.py apply_qk_norm
        k = self.k_norm(k.reshape(-1, D)).view(k.shape)
        q, k = self.rotary_emb(positions, q, k)
        out, _ = self.o_proj(self.attn(q, k, v, forward_batch))
        return out


class _Moe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate, self.topk, self.experts = _Lin(H, E), _TopK(), _Experts()

    def forward(self, hidden_states, forward_batch=None):
        logits, _ = self.gate(hidden_states)
        return self.experts(hidden_states, self.topk(hidden_states, logits))


class _Layer(nn.Module):
    def __init__(self, i: int, rope: nn.Module) -> None:
        super().__init__()
        self.layer_id = i
        self.self_attn, self.mlp = _SelfAttn(rope), _Moe()
        self.input_layernorm, self.post_attention_layernorm = _Norm(), _Norm()

    def forward(self, positions, hidden_states, forward_batch, residual):
        if residual is None:
            residual, h = hidden_states, self.input_layernorm(hidden_states)
        else:
            h, residual = self.input_layernorm(hidden_states, residual)
        h = self.self_attn(positions=positions, hidden_states=h, forward_batch=forward_batch)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h, forward_batch), residual


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        rope = _Rope()  # get_rope: ONE instance shared by every layer
        self.embed_tokens = nn.Embedding(50, H)
        self.layers = nn.ModuleList([_Layer(i, rope) for i in range(2)])
        self.norm = _Norm()

    def forward(
        self, input_ids, positions, forward_batch, input_embeds=None, pp_proxy_tensors=None
    ):
        h, r = self.embed_tokens(input_ids), None
        for layer in self.layers:
            h, r = layer(positions, h, forward_batch, r)
        return self.norm(h, r)[0]


class _LogitsProcessor(nn.Module):
    def forward(self, input_ids, hidden_states, lm_head, forward_batch):
        return LogitsProcessorOutput(hidden_states[-1:] @ lm_head.weight.T)


class _CausalLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model, self.lm_head, self.logits_processor = (
            _Model(),
            nn.Embedding(50, H),
            _LogitsProcessor(),
        )

    def forward(self, input_ids, positions, forward_batch):
        h = self.model(input_ids, positions, forward_batch)
        return self.logits_processor(input_ids, h, self.lm_head, forward_batch)


def _members(v) -> list[torch.Tensor]:
    if isinstance(v, LogitsProcessorOutput):
        return [v.next_token_logits]
    return [t for t in v if isinstance(t, torch.Tensor)] if isinstance(v, tuple | list) else [v]


@torch.no_grad()
def test_sglang_own_writers_read_back(tmp_path: Path, workspace, monkeypatch) -> None:
    hook, dumper = _sglang_modules(monkeypatch)
    torch.manual_seed(0)
    model = _CausalLM().requires_grad_(False)
    truth, step = {}, [0]
    for name, m in model.named_modules(remove_duplicate=False):
        if name:
            m.register_forward_hook(
                lambda _m, _i, o, name=name: truth.__setitem__((step[0], name), o)
            )
    hook.register_forward_hook_for_model(model, str(tmp_path / "hook"), None, 1, 0, 0)
    for k, v in {"DUMPER_ENABLE": "1", "DUMPER_DIR": str(tmp_path / "dumper"),
                 "DUMPER_NON_INTRUSIVE_MODE": "all", "DUMPER_ENABLE_OUTPUT_CONSOLE": "0"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    d = dumper._Dumper(config=dumper.DumperConfig.from_env())
    d.register_non_intrusive_dumper(model)
    ids, pos = torch.randint(0, 50, (T,)), torch.arange(T)
    for s in range(3):  # a prefill and two decodes
        step[0] = s
        fb = ForwardBatch(ids, torch.tensor([T + s]), pos, torch.tensor([0]), ["req0"])
        out = model(ids, pos, fb)
        d.step()  # ModelRunner.forward calls it after each forward
        ids, pos = out.next_token_logits.argmax(-1) % 50, torch.tensor([T + s])

    for fmt, root in (("sglang_hook", tmp_path / "hook"), ("sglang_dumper", tmp_path / "dumper")):
        run = ingest_dump(workspace, root)
        assert query.run_info(workspace, run)["format"] == fmt
        assert query.steps(workspace, run) == [0, 1, 2]
        assert query.ingest_errors(workspace, run).empty
        df = query.find_tensors(workspace, run)
        n = 0
        for r in df[df.part.isna() & (df.io == "output")].itertuples():
            mod = "" if r.module == "root" else r.module
            if (int(r.step), mod) not in truth or (fmt == "sglang_dumper" and "rotary" in mod):
                continue  # ForwardBatch fields; the shared rope's capture keeps its last call
            want = _members(truth[(int(r.step), mod)])[int(r.idx)]
            got = query.load_tensor(workspace, int(r.tensor_id))
            assert torch.equal(got.reshape(want.shape), want), (fmt, r.step, r.module, r.idx)
            n += 1
        # hook: leaves + model + logits_processor (the last pass's two never written);
        # dumper: every module
        assert n == (94 if fmt == "sglang_hook" else 114), (fmt, n)
