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

from studio_backend.errors import InputError, StudioError
from studio_backend.trace.ingest import ingest_profile
from studio_backend.trace.model_trace import load_model, prompt_ids
from studio_backend.trace.profile_run import profile_call
from studio_backend.workspace import Workspace


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
    """Profile ``max_tokens`` greedy steps of ``prompt``; returns (profile id, trace file).

    ``out``: a directory (created) that receives ``trace.json`` (tp=1) or
    ``trace_rank<R>.json`` per rank, or a ``.json`` file path (tp=1 only); default a new
    ``profile-*`` folder in the workspace."""
    if tp != 1 and engine != "reference":
        raise StudioError("--engine transformers profiles one process: use --tp 1")
    if max_tokens < 1:
        raise StudioError("--max-tokens must be at least 1")
    out = trace_path(out, tp, ws.root)
    if engine == "reference" and tp > 1:
        return _profile_reference_tp(ws, model_dir, prompt, max_tokens, tp, out, name)
    if engine == "reference":
        trace = _profile_reference(model_dir, prompt, max_tokens, out)
        label = "reference engine"
    else:
        trace = _profile_transformers(model_dir, prompt, max_tokens, out)
        label = "transformers"
    pid = ingest_profile(ws, trace, name=name or f"{model_dir.name} ({label} profile run)")
    return pid, trace


def trace_path(out: Path | None, tp: int, root: Path) -> Path:
    """Where rank 0's trace goes for ``--out`` (a directory, or a ``.json`` file at tp=1).

    The other ranks' traces go beside it as ``trace_rank<R>.json``."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="profile-", dir=root)) / "trace.json"
    if out.name.endswith((".json", ".json.gz")) and not out.is_dir():
        if tp > 1:
            raise InputError(out, f"--tp {tp} writes one trace per rank: give a directory")
        return out
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory (--out takes a directory)")
    out.mkdir(parents=True, exist_ok=True)
    return out / ("trace.json" if tp == 1 else "trace_rank0.json")


def _profile_reference_tp(
    ws: Workspace,
    model_dir: Path,
    prompt: str,
    max_tokens: int,
    tp: int,
    out: Path,
    name: str | None,
) -> tuple[str, Path]:
    """Every rank of a tensor-parallel run profiles itself; each rank's trace is one profile.

    Returns rank 0's profile id and trace (the others are listed beside it)."""
    from studio_backend.engines.reference.offline import run_offline

    run_offline(model_dir, tp=tp, prompts=[prompt], max_tokens=max_tokens, profile_dir=out.parent)
    first: tuple[str, Path] | None = None
    for rank in range(tp):
        trace = out.parent / f"trace_rank{rank}.json"
        label = f"{name or model_dir.name} (reference engine tp={tp}, rank {rank})"
        pid = ingest_profile(ws, trace, name=label)
        first = first or (pid, trace)
    assert first is not None
    return first


def _profile_reference(model_dir: Path, prompt: str, max_tokens: int, out: Path) -> Path:
    """The reference engine at tp=1 in this process, warmed up before the profiler starts."""
    from studio_backend.engines.reference import parallel
    from studio_backend.engines.reference.offline import encode_prompts
    from studio_backend.engines.reference.runner import ModelRunner

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
