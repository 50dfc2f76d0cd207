"""One demo click fills every page: dump + expert load + DSA trace + profile + module trace.

Runs the same code paths as ``studio dump ingest``, ``studio experts dump:RUN``, ``studio dsa
run --workload needle --engine MODEL --ingest``, ``studio profile run`` and ``studio trace
modules``, in this process, on the demo model and the demo request text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from backend.engines.demo import DemoResult, Progress, demo_prompt, run_demo
from backend.workspace import Workspace

DSA_REQUESTS = 2  # needle prompts traced by the DSA run
DSA_CONTEXT_CHARS = 600
DSA_NEW_TOKENS = 4


@dataclass
class FullDemo:
    demo: DemoResult
    run_id: str
    moe_source: str
    dsa_trace: str
    profile_id: str
    trace_id: str
    lines: list[str] = field(default_factory=list)


def run_full_demo(
    ws: Workspace, progress: Progress | None = None, tp: int = 2, max_tokens: int = 4
) -> FullDemo:
    """Dump the demo model and fill the expert-load, DSA, profile and module-trace tables."""
    say = progress or (lambda f, m: None)
    t0 = time.monotonic()

    def part(lo: float, hi: float) -> Progress:
        return lambda f, m: say(lo + (hi - lo) * f, m)

    demo = run_demo(ws.dumps_dir, ws.root / "models", part(0.0, 0.45), tp=tp, max_tokens=max_tokens)
    ws.log("demo", f"reference engine demo dump at {demo.dump_root}")
    lines = [
        f"Dump written to `{demo.dump_root}` ({demo.prompt_tokens} prompt tokens, "
        f"{demo.completion_tokens} generated)."
    ]
    from backend.dumps.ingest import ingest_dump
    from backend.moe.cli import import_source

    say(0.5, "Ingesting the dump")
    run_id = ingest_dump(ws, demo.dump_root, name="demo")
    lines.append(f"Ingested as dump run `{run_id}`.")
    say(0.6, "Routing the dumped router logits (expert load)")
    (source,) = import_source(ws, f"dump:{run_id}")  # dump-<run id>, as `studio experts`
    lines.append(f"Expert load stored as source `{source}`.")

    say(0.65, "Tracing DSA top-k selections on needle prompts")
    dsa_trace = _dsa(ws, demo.model_dir)
    lines.append(f"DSA trace `{dsa_trace}` ingested.")

    from backend.trace.engine_profile import profile_model_dir
    from backend.trace.model_trace import trace_engine_dir

    prompt = demo_prompt()
    say(0.8, "Profiling greedy generation")
    profile_id, _ = profile_model_dir(ws, demo.model_dir, prompt=prompt, max_tokens=2, name="demo")
    lines.append(f"Profile `{profile_id}` ingested.")
    say(0.9, f"Tracing module calls (tp={tp})")
    traced = trace_engine_dir(ws, demo.model_dir, prompt, tp=tp, name="demo")
    trace_id = traced[0][0]
    lines.append(f"Module trace `{trace_id}` stored ({len(traced)} ranks).")
    ws.log("demo", f"demo filled dump {run_id}, experts, DSA, profile and module trace")
    lines.append(f"Every page has data now ({time.monotonic() - t0:.0f} s in all).")
    say(1.0, "Demo done")
    return FullDemo(demo, run_id, source, dsa_trace, profile_id, trace_id, lines)


def _dsa(ws: Workspace, model_dir: Path) -> str:
    from backend.dsa.ingest import ingest_path
    from backend.dsa.run import run_engine_requests
    from backend.dsa.tracer import TraceConfig
    from backend.dsa.workloads.needle import needle_prompts

    out = ws.root / "dsa" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    reqs = needle_prompts(DSA_REQUESTS, DSA_CONTEXT_CHARS, seed=0)
    run_engine_requests(
        reqs, out, model_dir, dataset="needle", trace_cfg=TraceConfig(out_dir=str(out)),
        index_topk=32, batch_size=DSA_REQUESTS, max_new_tokens=DSA_NEW_TOKENS,
    )  # fmt: skip
    return ingest_path(ws, out / "trace_steps.jsonl", name="demo").trace_id
