"""Trace one forward pass of a checkpoint and store the calls.

Through the reference engine (vLLM's module layout; at tp > 1 every rank is traced, each rank's
calls stored as one trace with its sharded shapes) or through transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from studio_backend.errors import InputError, StudioError
from studio_backend.trace.ingest import store_trace
from studio_backend.trace.module_tracer import ModuleCall, trace_modules
from studio_backend.workspace import Workspace


def load_model(model_dir: Path):
    """A transformers causal LM (eval mode) and its tokenizer, None when it ships none."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise StudioError(f"transformers is needed to load {model_dir}: {exc}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto")
    except (OSError, ValueError) as exc:
        raise InputError(model_dir, f"cannot load the model: {exc}") from exc
    tok = None
    if (model_dir / "tokenizer.json").is_file() or (model_dir / "tokenizer_config.json").is_file():
        try:
            tok = AutoTokenizer.from_pretrained(str(model_dir))
        except (OSError, ValueError, TypeError):
            tok = None
    return model.eval(), tok


def prompt_ids(tok, prompt: str, vocab: int) -> torch.Tensor:
    if tok is not None:
        ids = tok(prompt, return_tensors="pt")["input_ids"]
    else:
        # No tokenizer in the checkpoint: the prompt's bytes modulo the vocabulary stand in.
        ids = torch.tensor([[b % vocab for b in prompt.encode("utf-8")]], dtype=torch.long)
    if ids.numel() == 0:
        raise InputError(prompt, "the prompt tokenizes to no tokens")
    return ids


def trace_model_dir(
    ws: Workspace, model_dir: Path, prompt: str, *, name: str | None = None
) -> tuple[str, list[ModuleCall]]:
    """Load ``model_dir``, trace one prefill forward of ``prompt``, store it; (id, calls)."""
    model, tok = load_model(model_dir)
    ids = prompt_ids(tok, prompt, model.config.vocab_size)
    with trace_modules(model) as tracer, torch.no_grad():
        model(input_ids=ids)
    trace_id = store_trace(
        ws, tracer.calls, name=name or model_dir.name, model=str(model_dir), prompt=prompt
    )
    return trace_id, tracer.calls


def trace_engine_dir(
    ws: Workspace, model_dir: Path, prompt: str, *, tp: int = 1, name: str | None = None
) -> list[tuple[str, list[ModuleCall]]]:
    """Trace the reference engine's prefill of ``prompt`` on ``tp`` ranks; [(trace id, calls)]
    per rank, rank 0 first."""
    import tempfile

    from studio_backend.engines.reference.offline import run_offline

    with tempfile.TemporaryDirectory(prefix="studio-trace-") as tmp:
        run_offline(model_dir, tp=tp, prompts=[prompt], max_tokens=1, trace_dir=tmp)
        per_rank = [
            [
                ModuleCall(**c)
                for c in torch.load(Path(tmp) / f"calls_rank{r}.pt", weights_only=True)
            ]
            for r in range(tp)
        ]
    out = []
    for rank, calls in enumerate(per_rank):
        label = name or model_dir.name
        label += f" (reference engine tp={tp}, rank {rank})" if tp > 1 else " (reference engine)"
        trace_id = store_trace(ws, calls, name=label, model=str(model_dir), prompt=prompt)
        out.append((trace_id, calls))
    return out
