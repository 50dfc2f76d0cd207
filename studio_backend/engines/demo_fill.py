"""One demo click fills every page: dump + expert load + DSA trace + profile + module trace,
and a second dump of the same request at tp=1 (the Compare page's reference run).

Runs the same code paths as ``studio dump ingest``, ``studio experts dump:RUN``, ``studio dsa
run --workload needle --engine MODEL --ingest``, ``studio profile run`` and ``studio trace
modules``, in this process, on the demo model and the demo request text.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from studio_backend.engines.demo import DemoResult, Progress, demo_model, demo_prompt, run_demo
from studio_backend.workspace import Workspace

REFERENCE_NAME = "demo tp=1 (reference)"
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
    reference_run: str | None = None  # the same request at tp=1 (None when the demo ran at tp=1)


def run_full_demo(
    ws: Workspace, progress: Progress | None = None, tp: int = 2, max_tokens: int = 4
) -> FullDemo:
    """Dump the demo model and fill the expert-load, DSA, profile and module-trace tables."""
    say = progress or (lambda f, m: None)
    t0 = time.monotonic()

    def part(lo: float, hi: float) -> Progress:
        return lambda f, m: say(lo + (hi - lo) * f, m)

    # The tp=1 reference dump runs in its own process while the tp=2 server starts and serves:
    # their start-ups (imports, model load) overlap instead of adding up.
    model_dir = demo_model(ws.root / "models", part(0.0, 0.45))
    with ThreadPoolExecutor(1) as pool:
        tp1 = pool.submit(_tp1_dump, ws, model_dir, max_tokens) if tp > 1 else None
        demo = run_demo(
            ws.dumps_dir, ws.root / "models", part(0.0, 0.45), tp=tp, max_tokens=max_tokens
        )
        if tp1 is not None:
            say(0.46, "Waiting for the same request at tp=1 (the Compare page's reference)")
        ref_root = tp1.result() if tp1 is not None else None
    ws.log("demo", f"reference engine demo dump at {demo.dump_root}")
    capture_id = _record_launch(ws, demo, tp, max_tokens)
    lines = [
        f"Dump written to `{demo.dump_root}` ({demo.prompt_tokens} prompt tokens, "
        f"{demo.completion_tokens} generated)."
    ]
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.launch.capture import set_ingest
    from studio_backend.moe.cli import import_source

    reference_run = None
    if ref_root is not None:
        # Ingested first: the Compare page offers the older of the two newest runs as A (the
        # reference) and the newest as B, and the other pages open on the newest (the demo).
        say(0.48, "Ingesting the tp=1 reference dump")
        # No server made it (no launch record): its config names the model folder the way
        # transformers' AutoConfig.from_pretrained(model_dir) does, for its tokenizer.
        cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        cfg["_name_or_path"] = str(model_dir.resolve())
        reference_run = ingest_dump(ws, ref_root, name=REFERENCE_NAME, model_config=cfg)
        lines.append(f"The same request at tp=1 ingested as `{reference_run}` (Compare: A).")
    say(0.5, "Ingesting the dump")
    run_id = ingest_dump(ws, demo.dump_root, name="demo")
    set_ingest(ws, capture_id, "ingested", run_id)
    lines.append(f"Ingested as dump run `{run_id}`.")
    say(0.6, "Routing the dumped router logits (expert load)")
    (source,) = import_source(ws, f"dump:{run_id}")  # dump-<run id>, as `studio experts`
    lines.append(f"Expert load stored as source `{source}`.")

    say(0.65, "Tracing DSA top-k selections on needle prompts")
    dsa_trace = _dsa(ws, demo.model_dir)
    lines.append(f"DSA trace `{dsa_trace}` ingested.")

    from studio_backend.trace.engine_profile import profile_model_dir
    from studio_backend.trace.model_trace import trace_engine_dir

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
    return FullDemo(demo, run_id, source, dsa_trace, profile_id, trace_id, lines, reference_run)


def _record_launch(ws: Workspace, demo: DemoResult, tp: int, max_tokens: int) -> str:
    """The demo's server and request as a launch and its capture, like the Launch page's: the
    run is then known to come from the demo model (its tokenizer, its tp). Returns the capture id."""
    from studio_backend.engines.demo import CAPTURE_TEXT
    from studio_backend.launch.record import record_capture, record_served
    from studio_backend.launch.spec import DumpSettings, LaunchSpec

    dump = DumpSettings(tool="msit", dump_path=str(ws.dumps_dir), token_end=max_tokens)
    spec = LaunchSpec("reference", str(demo.model_dir), tp=tp, port=demo.port, dump=dump)
    launch_id = record_served(ws, spec, dump_root=demo.dump_root, by="studio demo")
    return record_capture(
        ws, launch_id, source=str(CAPTURE_TEXT), prompt_tokens=demo.prompt_tokens,
        max_tokens=max_tokens, completion=demo.completion, dump_roots=[str(demo.dump_root)],
    )  # fmt: skip


def _tp1_dump(ws: Workspace, model_dir: Path, max_tokens: int) -> Path:
    """The demo request through the reference engine on one rank, dumped by msit like the demo."""
    from studio_backend.engines.reference.dumping import DumpOptions
    from studio_backend.engines.reference.offline import run_offline

    # Its own folder: msit names a dump by the second it starts, like the demo's running beside it.
    out = ws.dumps_dir / "demo-tp1"
    dump = DumpOptions(tool="msit", dump_path=out, token_range=list(range(max_tokens)))
    res = run_offline(model_dir, tp=1, prompts=[demo_prompt()], max_tokens=max_tokens, dump=dump)
    if res.dump_root is None:
        raise RuntimeError("the tp=1 reference run reported no dump root")
    return res.dump_root


def _dsa(ws: Workspace, model_dir: Path) -> str:
    from studio_backend.dsa.ingest import ingest_path
    from studio_backend.dsa.run import run_engine_requests
    from studio_backend.dsa.tracer import TraceConfig
    from studio_backend.dsa.workloads.needle import needle_prompts

    out = ws.root / "dsa" / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    reqs = needle_prompts(DSA_REQUESTS, DSA_CONTEXT_CHARS, seed=0)
    run_engine_requests(
        reqs, out, model_dir, dataset="needle", trace_cfg=TraceConfig(out_dir=str(out)),
        index_topk=32, batch_size=DSA_REQUESTS, max_new_tokens=DSA_NEW_TOKENS,
    )  # fmt: skip
    return ingest_path(ws, out / "trace_steps.jsonl", name="demo").trace_id
