"""``studio trace ...`` (module call traces) and ``studio profile ...`` (profiler ingest)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from studio_backend.errors import StudioError
from studio_backend.paths import existing_dir
from studio_backend.workspace import open_workspace

if TYPE_CHECKING:
    import pandas as pd


def _print_table(df: pd.DataFrame, as_json: bool) -> None:
    if as_json:
        print(json.dumps(json.loads(df.to_json(orient="records", date_format="iso")), indent=1))
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.width", 160):
            print(df.to_string(index=False))


# ---- studio trace ---------------------------------------------------------------------------


def _cmd_trace_modules(args: argparse.Namespace) -> int:
    from studio_backend.trace.model_trace import trace_engine_dir, trace_model_dir
    from studio_backend.trace.module_tracer import format_counts, format_layer

    if args.tp != 1 and args.engine == "transformers":
        raise StudioError("--engine transformers traces one process: use --tp 1")
    model_dir = existing_dir(args.model, "model directory")
    ws = open_workspace(args.workspace)
    try:
        if args.engine == "vllm":
            from studio_backend.trace.vllm_trace import VllmTraceOptions, trace_vllm

            opts = VllmTraceOptions(tp=args.tp, step=args.step, port=args.port,
                                    python=args.python)  # fmt: skip
            traced = trace_vllm(ws, model_dir, args.prompt, opts, name=args.name)
            trace_id, calls = traced[0]  # rank 0 printed; every rank is stored
        elif args.engine == "reference":
            traced = trace_engine_dir(ws, model_dir, args.prompt, tp=args.tp, name=args.name)
            trace_id, calls = traced[0]  # rank 0 printed; every rank is stored
        else:
            trace_id, calls = trace_model_dir(ws, model_dir, args.prompt, name=args.name)
    finally:
        ws.close()
    print(format_counts(calls))
    print()
    print(format_layer(calls, args.layer))
    print(f"\nstored trace {trace_id} ({len(calls)} calls)")
    return 0


def _cmd_trace_list(args: argparse.Namespace) -> int:
    ws = open_workspace(args.workspace, read_only=True)  # works while the studio runs
    try:
        df = (
            ws.cursor()
            .execute(
                "SELECT trace_id, name, model, n_calls, created_at FROM trace_runs ORDER BY created_at"
            )
            .df()
        )
    finally:
        ws.close()
    _print_table(df, args.json)
    return 0


# ---- studio profile -------------------------------------------------------------------------


def _cmd_ingest(args: argparse.Namespace) -> int:
    from studio_backend.trace import analysis
    from studio_backend.trace.ingest import ingest_profile

    ws = open_workspace(args.workspace)
    info: dict = {}
    try:
        pid = ingest_profile(ws, args.path, name=args.name, fmt=args.format, info=info)
        df = analysis.top(ws, pid, kind=args.kind, n=args.top, by=args.rank_by)
    finally:
        ws.close()
    if not args.json:
        print(f"profile {pid}" + (" (already ingested: same content)" if info["existing"] else ""))
    _print_table(df, args.json)
    if info["bad_events"]:
        print(
            f"studio profile: {args.path}: {info['bad_events']} bad events skipped"
            f" (first: {info['first_bad']})",
            file=sys.stderr,
        )
        return 1  # docs/RELIABILITY.md: finished, with reported problems
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from studio_backend.trace import analysis

    ws = open_workspace(args.workspace, read_only=True)  # works while the studio runs
    try:
        df = analysis.list_profiles(ws)
    finally:
        ws.close()
    _print_table(df, args.json)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from studio_backend.trace import analysis
    from studio_backend.trace.families import load_families

    table = load_families(args.families)
    views = {
        "top": lambda ws: analysis.top(
            ws, args.profile, kind=args.kind, n=args.top, by=args.rank_by
        ),
        "families": lambda ws: analysis.families(ws, args.profile, kind=args.kind, table=table),
        "modules": lambda ws: analysis.by_module(ws, args.profile, kind=args.kind),
        "layers": lambda ws: analysis.per_layer(ws, args.profile, kind=args.kind, table=table),
        "unattributed": lambda ws: analysis.unattributed(ws, args.profile, kind=args.kind),
    }
    ws = open_workspace(args.workspace, read_only=True)  # works while the studio runs
    try:
        df = views[args.view](ws)
    finally:
        ws.close()
    _print_table(df, args.json)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    from studio_backend.trace.diff import diff
    from studio_backend.trace.families import load_families

    table = load_families(args.families)
    ws = open_workspace(args.workspace, read_only=True)  # works while the studio runs
    try:
        df = diff(ws, args.a, args.b, by=args.by, kind=args.kind, table=table)
    finally:
        ws.close()
    _print_table(df, args.json)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from studio_backend.trace import analysis
    from studio_backend.trace.engine_profile import profile_model_dir

    model_dir = existing_dir(args.model, "model directory")
    out = Path(args.out).expanduser().resolve() if args.out else None
    ws = open_workspace(args.workspace)
    if args.engine == "vllm":
        from studio_backend.trace.vllm_trace import VllmTraceOptions, profile_vllm

        try:
            opts = VllmTraceOptions(tp=args.tp, port=args.port, python=args.python)
            done = profile_vllm(ws, model_dir, args.prompt, args.max_tokens, opts, out_dir=out)
            for pid, trace in done:
                print(f"profile {pid} (Chrome trace {trace})")
                _print_table(analysis.by_module(ws, pid).head(args.top), args.json)
        finally:
            ws.close()
        return 0
    try:
        pid, trace = profile_model_dir(
            ws, model_dir, prompt=args.prompt, max_tokens=args.max_tokens, tp=args.tp, out=out,
            engine=args.engine,
        )  # fmt: skip
        df = analysis.by_module(ws, pid)
    finally:
        ws.close()
    if not args.json:
        print(f"profile {pid} (Chrome trace {trace})")
    _print_table(df.head(args.top), args.json)
    return 0


def _common(p: argparse.ArgumentParser, top: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="print JSON records")
    p.add_argument(
        "--kind",
        choices=("auto", "kernel", "cpu_op", "cpu"),
        default="auto",
        help="device kernels or cpu ops (auto: kernels when the profile has any); cpu: every"
        " host event torch.profiler's key_averages lists (top table only)",
    )
    if top:
        p.add_argument("--top", type=int, default=20, help="rows to print (default 20)")
        p.add_argument(
            "--rank-by", choices=("self", "total"), default="self",
            help="order of the top table: self time (default, as torch.profiler's table) or"
            " total (inclusive) time",
        )  # fmt: skip


def _families_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--families", metavar="FILE",
        help='family regex table, JSON [["family", "regex"], ...] (default: built-in table)',
    )  # fmt: skip


def _modules_args(mod: argparse.ArgumentParser) -> None:
    mod.add_argument("--model", required=True, help="HF-format model directory")
    mod.add_argument("--prompt", default="Hello, world", help="prompt text")
    mod.add_argument(
        "--tp", type=int, default=1, help="tensor parallel size (reference engine: every rank)"
    )
    mod.add_argument(
        "--engine",
        choices=("reference", "transformers", "vllm"),
        default="transformers",
        help="transformers: AutoModelForCausalLM (any causal LM); reference: the studio's engine "
        "with vLLM's module layout (Qwen3-MoE checkpoints); vllm: the real vLLM, launched from "
        "its venv (docs/TRACE.md)",
    )
    mod.add_argument(
        "--step", type=int, default=0, help="vllm: forward step to trace (0 prefill, 1 decode)"
    )
    mod.add_argument("--port", type=int, default=8029, help="vllm: port of the traced server")
    mod.add_argument("--python", help="vllm: its interpreter (default as `studio launch`)")
    mod.add_argument("--layer", type=int, default=0, help="layer whose call order is printed")
    mod.add_argument("--name", help="name for the stored trace")
    mod.set_defaults(func=_cmd_trace_modules)


def register(sub: argparse._SubParsersAction) -> None:
    trace = sub.add_parser("trace", help="module call traces: order, classes, shapes")
    tsub = trace.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    what = "trace the module calls of one forward pass of a model and store them"
    _modules_args(tsub.add_parser("modules", help=what))
    _modules_args(sub.add_parser("trace-modules", help=f"{what} (= trace modules)"))
    lst = tsub.add_parser("list", help="list stored module traces")
    lst.add_argument("--json", action="store_true", help="print JSON records")
    lst.set_defaults(func=_cmd_trace_list)

    prof = sub.add_parser("profile", help="profiler traces: ingest, top kernels, attribution, diff")
    psub = prof.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    ing = psub.add_parser(
        "ingest",
        aliases=["import"],
        help="ingest a Kineto .json/.json.gz, a torch_npu *_ascend_pt dir or an nsys .sqlite",
    )
    ing.add_argument("path", help="profile file or directory")
    ing.add_argument("--name", help="name shown in the studio")
    ing.add_argument(
        "--format", choices=("kineto", "torch_npu", "nsys"), help="override format detection"
    )
    _common(ing)
    ing.set_defaults(func=_cmd_ingest)
    pl = psub.add_parser("list", help="list ingested profiles")
    pl.add_argument("--json", action="store_true", help="print JSON records")
    pl.set_defaults(func=_cmd_list)
    show = psub.add_parser("show", help="one analysis of an ingested profile")
    show.add_argument("profile", help="profile id (see `studio profile list`)")
    show.add_argument(
        "view",
        choices=("top", "families", "modules", "layers", "unattributed"),
        help="what to show",
    )
    _common(show)
    _families_arg(show)
    show.set_defaults(func=_cmd_show)
    d = psub.add_parser("diff", help="compare two ingested profiles")
    d.add_argument("a", help="baseline profile id")
    d.add_argument("b", help="new profile id")
    d.add_argument("--by", choices=("name", "family", "module"), default="name", help="key")
    _common(d, top=False)
    _families_arg(d)
    d.set_defaults(func=_cmd_diff)
    run = psub.add_parser(
        "run",
        help="profile greedy generation on a checkpoint (one process, modules annotated) "
        "and ingest it",
    )
    run.add_argument("--model", required=True, help="HF-format model directory")
    run.add_argument(
        "--tp",
        type=int,
        default=1,
        help="tensor parallel size (reference engine: one profile per rank)",
    )
    run.add_argument("--prompt", default="Hello, world", help="prompt text")
    run.add_argument("--max-tokens", type=int, default=2, help="tokens to generate")
    run.add_argument(
        "--engine",
        choices=("reference", "transformers", "vllm"),
        default="reference",
        help="reference: the studio's engine with vLLM's module layout (Qwen3-MoE checkpoints); "
        "transformers: AutoModelForCausalLM (any causal LM); vllm: the real vLLM's own torch "
        "profiler (one profile per trace file vLLM writes)",
    )
    run.add_argument("--port", type=int, default=8029, help="vllm: port of the profiled server")
    run.add_argument("--python", help="vllm: its interpreter (default as `studio launch`)")
    run.add_argument(
        "--out", metavar="DIR",
        help="directory for the Chrome trace(s): trace.json, or trace_rank<R>.json per rank "
        "(vllm: vLLM's files under DIR/torch); a path ending in .json names the file (tp 1). "
        "Default: a new folder in the workspace",
    )  # fmt: skip
    run.add_argument("--top", type=int, default=20, help="modules to print")
    run.add_argument("--json", action="store_true", help="print JSON records")
    run.set_defaults(func=_cmd_run)
