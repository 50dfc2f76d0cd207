"""``studio dsa run``: trace a workload through the tiny DSA model (lightning indexer + tracer).

The model is random-initialised (its text is meaningless); what the trace records is real:
the indexer's top-k over the real KV of real prompts, including shared prompt prefixes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from studio_backend.dsa.prefix import PrefixCacheAnalyzer
from studio_backend.dsa.tracer import TraceConfig, Tracer
from studio_backend.dsa.workloads import Request, byte_tokens
from studio_backend.errors import InputError


def run_requests(
    reqs: Sequence[Request],
    out_dir: Path,
    *,
    dataset: str,
    model_cfg: Any = None,
    trace_cfg: TraceConfig | None = None,
    batch_size: int = 2,
    max_new_tokens: int = 8,
    max_prompt_tokens: int = 1024,
    burst: bool = False,
) -> dict[str, Any]:
    """Generate for every request with tracing on; write the trace and summary.json."""
    import torch

    from studio_backend.dsa.indexer import TinyConfig, TinySparseLM, generate

    if not reqs:
        raise InputError(dataset, "the workload has no requests")
    tcfg = trace_cfg or TraceConfig(out_dir=str(out_dir))
    prompts = {r.request_id: byte_tokens(r.prompt)[:max_prompt_tokens] for r in reqs}
    caps = {r.request_id: min(max_new_tokens, r.max_new_tokens or max_new_tokens) for r in reqs}
    longest = max(len(p) for p in prompts.values()) + max_new_tokens + 1
    mcfg = model_cfg or TinyConfig()
    mcfg = TinyConfig(**{**mcfg.__dict__, "max_len": max(longest, 16), "max_batch": batch_size})
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    model = TinySparseLM(mcfg).eval()
    tracer = Tracer(tcfg)
    tracer.set_run_meta(run_name=out_dir.name, dataset=dataset)
    analyzer = PrefixCacheAnalyzer(tcfg.prefix_cache_key_tokens)

    def serve(batch: list[Request]) -> float:
        toks = [prompts[r.request_id] for r in batch]
        infos = [analyzer.analyze_prompt_tokens(t, tcfg.kv_block_size_tokens) for t in toks]
        ids = [r.request_id for r in batch]

        def hook(row: int, layer: int, start: int, end: int, idx, vals) -> None:
            tracer.set_batch([ids[row]], [infos[row]])
            tracer.record_dsa_topk(
                layer_id=layer, start_pos=start, end_pos=end, topk_indices=idx, topk_scores=vals
            )

        t0 = time.perf_counter()
        generate(model, toks, max(caps[i] for i in ids), hook=hook, on_step=tracer.set_step_timing)
        return time.perf_counter() - t0

    if burst:
        from studio_backend.dsa.workloads.burstgpt import replay

        lat = replay(reqs, batch_size, serve)
        tracer.set_serving(lat, batch_size=batch_size, max_new_tokens_cap=max_new_tokens)
    else:
        for i in range(0, len(reqs), batch_size):
            serve(list(reqs[i : i + batch_size]))
    summary = tracer.close()
    assert summary is not None
    return summary


def run_engine_requests(
    reqs: Sequence[Request],
    out_dir: Path,
    model_dir: Path,
    *,
    dataset: str,
    trace_cfg: TraceConfig | None = None,
    index_topk: int = 64,
    batch_size: int = 2,
    max_new_tokens: int = 8,
    max_prompt_tokens: int = 1024,
    seed: int = 0,
) -> dict[str, Any]:
    """The same, on the reference engine (Qwen3-MoE, one process) with the DSA hook attached."""
    from studio_backend.dsa.engine_hook import attach_dsa
    from studio_backend.engines.reference.offline import encode_prompts
    from studio_backend.engines.reference.runner import ModelRunner

    if not reqs:
        raise InputError(dataset, "the workload has no requests")
    tcfg = trace_cfg or TraceConfig(out_dir=str(out_dir))
    toks = [t[:max_prompt_tokens] for t in encode_prompts(model_dir, [r.prompt for r in reqs])]
    runner = ModelRunner(model_dir)
    tracer = Tracer(tcfg)
    tracer.set_run_meta(run_name=out_dir.name, dataset=dataset)
    analyzer = PrefixCacheAnalyzer(tcfg.prefix_cache_key_tokens)
    hook = attach_dsa(runner, tracer, index_topk=index_topk, seed=seed)
    try:
        for i in range(0, len(reqs), batch_size):
            batch = list(range(i, min(i + batch_size, len(reqs))))
            hook.request_ids = [reqs[j].request_id for j in batch]
            hook.prefix_infos = [
                analyzer.analyze_prompt_tokens(toks[j], tcfg.kv_block_size_tokens) for j in batch
            ]
            hook.reset()
            runner.generate([toks[j] for j in batch], max_new_tokens + 1, ignore_eos=True)
    finally:
        hook.detach()
    summary = tracer.close()
    assert summary is not None
    return summary


WORKLOADS = ("ruler", "longbenchv2", "sharegpt", "burstgpt", "needle")  # seed 004's names


def register_run(dsa: argparse._SubParsersAction) -> None:
    p = dsa.add_parser("run", help="trace a workload through the tiny DSA model (CPU, torch)")
    p.add_argument("--workload", choices=WORKLOADS, required=True,
                   help="RULER .jsonl, LongBench v2 data.json, ShareGPT JSON, BurstGPT CSV or"
                   " synthetic needle prompts")  # fmt: skip
    p.add_argument("--input", default="",
                   help="local file: RULER <task>/<subset>.jsonl, LongBench v2 data.json,"
                   " ShareGPT .json or BurstGPT .csv")  # fmt: skip
    p.add_argument("--out", required=True, help="trace output directory")
    p.add_argument("--sharegpt-turn-mode", choices=("full", "per_user_turn"), default="full",
                   help="one request per conversation or per user turn")  # fmt: skip
    p.add_argument("--limit", type=int, default=16, help="at most this many requests")
    p.add_argument("--batch-size", type=int, default=2, help="requests decoded together")
    p.add_argument("--max-new-tokens", type=int, default=8, help="decode steps per request")
    p.add_argument("--max-prompt-tokens", type=int, default=1024,
                   help="prompt tokens kept (RULER / LongBench v2 prompts lose their middle)")  # fmt: skip
    p.add_argument("--context-chars", type=int, default=1500, help="needle prompt length")
    p.add_argument("--layers", type=int, default=4, help="model layers")
    p.add_argument("--index-topk", type=int, default=64, help="tokens the indexer selects")
    p.add_argument("--kv-block-size", type=int, default=16, help="tokens per logical KV block")
    p.add_argument("--trace-store-scores", action="store_true", help="write scores_topk")
    p.add_argument("--trace-sample-rate", type=float, default=1.0, help="share of decode steps")
    p.add_argument("--trace-prefix-key-tokens", type=int, default=256,
                   help="max tokens hashed for the prefix key")  # fmt: skip
    p.add_argument("--gzip", action="store_true", help="write trace_steps.jsonl.gz")
    p.add_argument("--seed", type=int, default=0, help="model and sampling seed")
    p.add_argument("--engine", default="", metavar="MODEL_DIR",
                   help="run on the reference engine (Qwen3-MoE checkpoint, e.g. from"
                   " `studio model create`) with a lightning indexer per layer")  # fmt: skip
    p.add_argument("--ingest", action="store_true", help="ingest the trace into the workspace")
    p.set_defaults(func=cmd_run)


def load_workload(args: argparse.Namespace) -> list[Request]:
    from studio_backend.paths import existing_file

    if args.workload == "needle":
        from studio_backend.dsa.workloads.needle import needle_prompts

        return needle_prompts(args.limit, args.context_chars, args.seed)
    if not args.input:
        raise InputError("--input", f"the {args.workload} workload needs a local file")
    path = existing_file(args.input)
    if args.workload == "ruler":
        from studio_backend.dsa.workloads.ruler import load_ruler

        return load_ruler(path, args.limit, args.max_prompt_tokens)
    if args.workload == "longbenchv2":
        from studio_backend.dsa.workloads.longbench import load_longbench_v2

        return load_longbench_v2(path, args.limit, args.max_prompt_tokens)
    if args.workload == "sharegpt":
        from studio_backend.dsa.workloads.sharegpt import load_sharegpt

        return load_sharegpt(path, args.sharegpt_turn_mode, args.limit)
    from studio_backend.dsa.workloads.burstgpt import load_burstgpt

    return load_burstgpt(path, args.limit, args.max_prompt_tokens)


def cmd_run(args: argparse.Namespace) -> int:
    from studio_backend.dsa.indexer import TinyConfig

    out = Path(args.out).resolve()
    reqs = load_workload(args)
    tcfg = TraceConfig(
        out_dir=str(out), kv_block_size_tokens=args.kv_block_size,
        store_scores_topk=args.trace_store_scores, sample_rate=args.trace_sample_rate,
        prefix_cache_key_tokens=args.trace_prefix_key_tokens, gzip=args.gzip, seed=args.seed,
    )  # fmt: skip
    mcfg = TinyConfig(layers=args.layers, index_topk=args.index_topk, seed=args.seed)
    if args.engine:
        from studio_backend.paths import existing_dir

        if args.workload == "burstgpt":
            raise InputError("--engine", "BurstGPT replay runs on the tiny model only")
        summary = run_engine_requests(
            reqs, out, existing_dir(args.engine, "model directory"), dataset=args.workload,
            trace_cfg=tcfg, index_topk=args.index_topk, batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
            seed=args.seed,
        )  # fmt: skip
    else:
        summary = _run_tiny(args, reqs, out, mcfg, tcfg)
    print(f"{summary['unique_blocks']['count']} records from {len(reqs)} requests -> {out}")
    return _after_run(args, out, summary)


def _run_tiny(args, reqs, out, mcfg, tcfg) -> dict[str, Any]:
    return run_requests(
        reqs, out, dataset=args.workload, model_cfg=mcfg, trace_cfg=tcfg,
        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=args.max_prompt_tokens, burst=args.workload == "burstgpt",
    )  # fmt: skip


def _after_run(args: argparse.Namespace, out: Path, summary: dict[str, Any]) -> int:
    if "serving" in summary:
        lat = summary["serving"]["latency_ms"]
        print(f"latency ms p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} p99 {lat['p99']:.1f}")
    if args.ingest:
        from studio_backend.dsa.ingest import ingest_path
        from studio_backend.workspace import open_workspace

        ws = open_workspace(args.workspace)
        try:
            name = "trace_steps.jsonl" + (".gz" if args.gzip else "")
            res = ingest_path(ws, out / name)
        finally:
            ws.close()
        print(f"ingested as {res.trace_id} ({res.rows} rows)")
    return 0
