"""Offline multi-rank runs: one process per rank, results (and dumps) back to the caller.

``run_offline`` is the contract other areas' tests use to produce real multi-rank dumps.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio_backend.engines.reference import parallel
from studio_backend.engines.reference.dumping import DumpOptions
from studio_backend.engines.reference.layout import resolve_layout
from studio_backend.errors import InputError, StudioError
from studio_backend.models.config import read_config
from studio_backend.procs import clean_main_for_spawn


@dataclass
class OfflineResult:
    """Per-step last-token logits ``[num_active_requests, vocab]`` (fp32), the requests active
    at each step, generated ids per request, and the dump root (None without dumps)."""

    step_logits: list[torch.Tensor]
    step_requests: list[list[int]]
    tokens: list[list[int]]
    dump_root: Path | None = None
    prompt_ids: list[list[int]] = field(default_factory=list)


def encode_prompts(model_dir: Path, prompts: list[str] | list[list[int]]) -> list[list[int]]:
    out = []
    tok = None
    for p in prompts:
        if isinstance(p, str):
            if tok is None:
                from studio_backend.models.tokenizer import load_tokenizer

                tok = load_tokenizer(model_dir)
            out.append(tok.encode(p).ids)
        else:
            out.append([int(t) for t in p])
    if not out or any(not p for p in out):
        raise InputError("prompts", "need at least one non-empty prompt")
    return out


def _worker(
    rank: int,
    tp: int,
    port: int,
    model_dir: str,
    prompts: list[list[int]],
    max_tokens: int,
    dump: DumpOptions | None,
    kronecker: bool,
    out_file: str,
    profile_dir: str | None = None,
    trace_dir: str | None = None,
    layout: str | None = None,
) -> None:
    torch.set_num_threads(1)
    parallel.init_group(rank, tp, port)
    try:
        from studio_backend.engines.reference.runner import ModelRunner

        runner = ModelRunner(model_dir, kronecker_observe=kronecker, layout=layout)
        runner.warm_up()
        root = None
        if dump is not None:
            from studio_backend.engines.reference.dumping import install

            root = install(runner, dump, rank)
        if trace_dir is not None:  # studio trace modules --tp N: each rank records its calls
            from dataclasses import asdict

            from studio_backend.trace.module_tracer import trace_modules

            with trace_modules(runner.model) as tracer:
                gen = runner.generate(prompts, max_tokens, ignore_eos=True)
            calls = [asdict(c) | {"rank": rank} for c in tracer.calls]
            torch.save(calls, os.path.join(trace_dir, f"calls_rank{rank}.pt"))
        elif profile_dir is None:
            gen = runner.generate(prompts, max_tokens, ignore_eos=True)
        else:  # each rank profiles itself, modules annotated (studio profile run --tp N)
            from studio_backend.trace.profile_run import profile_call

            box: list = []
            profile_call(
                runner.model,
                lambda: box.append(runner.generate(prompts, max_tokens, ignore_eos=True)),
                os.path.join(profile_dir, f"trace_rank{rank}.json"),
            )
            gen = box[0]
        if rank == 0:
            torch.save(
                {
                    "step_logits": gen.step_logits,
                    "step_requests": gen.step_requests,
                    "tokens": gen.tokens,
                    "dump_root": str(root) if root else None,
                },
                out_file,
            )
        parallel.broadcast_object(None)  # keep ranks alive until every dump file is written
    finally:
        parallel.destroy()


def run_offline(
    model_dir: str | Path,
    tp: int = 2,
    prompts: list[str] | list[list[int]] | None = None,
    max_tokens: int = 2,
    dump: DumpOptions | None = None,
    timeout: float = 300.0,
    profile_dir: str | Path | None = None,
    trace_dir: str | Path | None = None,
    layout: str | None = None,
) -> OfflineResult:
    """Run ``prompts`` batched on ``tp`` rank processes; greedy; EOS ignored so the number of
    steps is exactly ``max_tokens`` (step 0 prefill, then decodes). With ``profile_dir`` every
    rank writes a module-annotated torch.profiler trace ``trace_rank<R>.json`` there; with
    ``trace_dir`` every rank writes its module calls (``calls_rank<R>.pt``) there. ``layout``:
    the module layout (model.py ``LAYOUTS``; default ``$STUDIO_REFERENCE_LAYOUT`` or vllm)."""
    model_dir = Path(model_dir).resolve()
    layout = resolve_layout(layout)
    cfg = read_config(model_dir)
    if tp < 1 or cfg.num_attention_heads % tp:
        raise InputError(tp, f"tp must divide num_attention_heads={cfg.num_attention_heads}")
    ids = encode_prompts(model_dir, prompts or ["Tensor parallel inference splits matrices."])
    kronecker = bool(dump and (dump.kronecker or "npu_kronecker_quant" in dump.api_list))
    if dump is not None:
        dump.check()
        dump.dump_path = str(Path(dump.dump_path).expanduser().resolve())
    ctx = mp.get_context("spawn")
    port = parallel.free_port()
    with tempfile.TemporaryDirectory(prefix="studio-offline-") as tmp:
        out_file = os.path.join(tmp, "result.pt")
        procs = [
            ctx.Process(
                target=_worker,
                args=(
                    r,
                    tp,
                    port,
                    str(model_dir),
                    ids,
                    max_tokens,
                    dump,
                    kronecker,
                    out_file,
                    str(profile_dir) if profile_dir is not None else None,
                    str(trace_dir) if trace_dir is not None else None,
                    layout,
                ),  # fmt: skip
                daemon=True,
            )
            for r in range(tp)
        ]
        with clean_main_for_spawn():
            for p in procs:
                p.start()
        for p in procs:
            p.join(timeout)
        failed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode != 0]
        for p in procs:
            if p.is_alive():
                p.kill()
        if failed:
            raise StudioError(f"reference engine rank(s) failed: {failed} (rank, exit code)")
        res = torch.load(out_file, weights_only=True)
    return OfflineResult(
        step_logits=res["step_logits"],
        step_requests=res["step_requests"],
        tokens=res["tokens"],
        dump_root=Path(res["dump_root"]) if res["dump_root"] else None,
        prompt_ids=ids,
    )
