"""`studio profile run`: profile generation on a checkpoint, every module annotated, and ingest.

Runs in this process (one rank) through the reference engine (vLLM's module layout: the paths a
vLLM profile would show) or through transformers. Each module call is wrapped in
``record_function(<module path>)`` so the profile's ops (and kernels on a GPU) attribute to
modules and layers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from backend.errors import StudioError
from backend.trace.ingest import ingest_profile
from backend.trace.model_trace import load_model, prompt_ids
from backend.trace.profile_run import profile_call
from backend.workspace import Workspace


def profile_model_dir(
    ws: Workspace,
    model_dir: Path,
    *,
    prompt: str = "Hello, world",
    max_tokens: int = 2,
    tp: int = 1,
    out: Path | None = None,
    name: str | None = None,
    engine: str = "reference",
) -> tuple[str, Path]:
    """Profile ``max_tokens`` greedy steps of ``prompt``; returns (profile id, trace file)."""
    if tp != 1:
        raise StudioError(
            "profile run profiles one process (--tp 1); for a tensor-parallel run take a "
            "torch.profiler / torch_npu / nsys profile of the server and `studio profile ingest` it"
        )
    if max_tokens < 1:
        raise StudioError("--max-tokens must be at least 1")
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="profile-", dir=ws.root)) / "trace.json"
    if engine == "reference":
        trace = _profile_reference(model_dir, prompt, max_tokens, out)
        label = "reference engine"
    else:
        trace = _profile_transformers(model_dir, prompt, max_tokens, out)
        label = "transformers"
    pid = ingest_profile(ws, trace, name=name or f"{model_dir.name} ({label} profile run)")
    return pid, trace


def _profile_reference(model_dir: Path, prompt: str, max_tokens: int, out: Path) -> Path:
    """The reference engine at tp=1 in this process, warmed up before the profiler starts."""
    from backend.engines.reference import parallel
    from backend.engines.reference.offline import encode_prompts
    from backend.engines.reference.runner import ModelRunner

    ids = encode_prompts(model_dir, [prompt])
    parallel.init_group(0, 1, parallel.free_port())
    try:
        runner = ModelRunner(model_dir)
        runner.warm_up()
        trace, _ = profile_call(
            runner.model, lambda: runner.generate(ids, max_tokens=max_tokens, ignore_eos=True), out
        )
    finally:
        parallel.destroy()
    return trace


def _profile_transformers(model_dir: Path, prompt: str, max_tokens: int, out: Path) -> Path:
    model, tok = load_model(model_dir)
    ids = prompt_ids(tok, prompt, model.config.vocab_size)

    def run() -> None:
        model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
            min_new_tokens=max_tokens, do_sample=False, pad_token_id=0,
        )  # fmt: skip

    trace, _ = profile_call(model, run, out)
    return trace
