"""``studio bench``: kernel micro-benchmarks, serving throughput, JSON export and import."""

from __future__ import annotations

import argparse
from pathlib import Path

from studio_backend.errors import InputError
from studio_backend.paths import existing_file


def _int_list(raw: str) -> list[int]:
    try:
        values = [int(v) for v in raw.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {raw!r}") from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {raw!r}")
    return values


def register(sub: argparse._SubParsersAction) -> None:
    from studio_backend.bench.presets import DEVICES, PRESETS
    from studio_kernels.routing_modes import ROUTINGS

    bench = sub.add_parser("bench", help="benchmark W4A16 MoE kernels and serving throughput")
    bsub = bench.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    k = bsub.add_parser("kernels", help="reference vs fused W4A16 MoE layer, per batch size")
    k.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="layer shape")
    k.add_argument("--batch", type=_int_list, default=[1, 2, 3, 4, 8, 16, 32],
                   help="batch sizes, comma-separated (default 1,2,3,4,8,16,32)")  # fmt: skip
    k.add_argument("--group", type=int, default=None, help="AWQ group size (default: preset's)")
    k.add_argument("--routing", default="uniform", choices=ROUTINGS, help="synthetic routing")
    k.add_argument("--device", default="auto", choices=DEVICES, help="where to run")
    k.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"],
                   help="activation dtype")  # fmt: skip
    k.add_argument("--reps", type=int, default=30, help="timed samples per path and batch")
    k.add_argument("--rotations", type=int, default=None,
                   help="routings/inputs rotated per sample (default: 4x the cache size)")  # fmt: skip
    k.add_argument("--seed", type=int, default=0, help="seed of the synthetic weights/routings")
    k.add_argument("--name", default=None, help="name of the run (default from the config)")
    k.add_argument("--json-out", default=None, metavar="FILE", help="also write the run as JSON")
    k.set_defaults(func=cmd_kernels)

    s = bsub.add_parser("serve", help="end-to-end decode throughput of an OpenAI server")
    s.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    s.add_argument("--batch", type=_int_list, default=[1, 2, 4, 6, 8],
                   help="concurrent requests per measurement, comma-separated")  # fmt: skip
    s.add_argument("--input-tokens", type=int, default=1, help="prompt length in tokens")
    s.add_argument("--output-tokens", type=int, default=1024, help="tokens decoded per request")
    s.add_argument("--model", default=None, help="model name (default: first of /v1/models)")
    s.add_argument("--name", default=None, help="name of the run")
    s.add_argument("--json-out", default=None, metavar="FILE", help="also write the run as JSON")
    s.set_defaults(func=cmd_serve)

    i = bsub.add_parser("import", help="import a benchmark run exported as JSON")
    i.add_argument("file", help="JSON file written by --json-out or `studio bench export`")
    i.set_defaults(func=cmd_import)

    e = bsub.add_parser("export", help="write a stored benchmark run as JSON")
    e.add_argument("run_id", help="run id (see `studio bench list`)")
    e.add_argument("--out", required=True, metavar="FILE", help="output JSON file")
    e.set_defaults(func=cmd_export)

    ls = bsub.add_parser("list", help="benchmark runs stored in the workspace")
    ls.set_defaults(func=cmd_list)


def _out_path(raw: str) -> Path:
    path = Path(raw).expanduser().resolve()
    if not path.parent.is_dir():
        raise InputError(path, "its folder does not exist")
    return path


def _store(args: argparse.Namespace, result: dict) -> int:
    from studio_backend.bench.results import save_result, write_json
    from studio_backend.workspace import open_workspace

    if args.json_out:
        write_json(result, _out_path(args.json_out))
    ws = open_workspace(args.workspace)
    try:
        run_id = save_result(ws, result)
    finally:
        ws.close()
    print(f"stored run {run_id} ({result['run']['name']})")
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    from studio_backend.bench.harness import KernelBenchConfig, run_kernel_bench

    if args.reps < 1:
        raise InputError(f"--reps {args.reps}", "must be at least 1")
    cfg = KernelBenchConfig(
        preset=args.preset, batches=args.batch, group_size=args.group, routing=args.routing,
        device=args.device, dtype=args.dtype, reps=args.reps, rotations=args.rotations,
        seed=args.seed, name=args.name,
    )  # fmt: skip
    result = run_kernel_bench(cfg, progress=print)
    run = result["run"]
    print(f"{run['device_name']}; copy {run['copy_gbps']:.1f} GB/s")
    print(f"{'batch':>5} {'impl':<16} {'median us':>10} {'p20':>9} {'p80':>9} {'GB/s':>8} "
          f"{'%copy':>6} {'TFLOP/s':>8} {'speedup':>7} {'rel err':>8}")  # fmt: skip
    for r in result["kernel_results"]:
        print(
            f"{r['batch']:>5} {r['impl']:<16} {r['median_us']:>10.1f} {r['p20_us']:>9.1f} "
            f"{r['p80_us']:>9.1f} {r['gbps']:>8.2f} {r['pct_copy']:>6.1f} {r['tflops']:>8.4f} "
            f"{r['speedup']:>6.2f}x {r['max_rel_err']:>8.1e}"
        )
    return _store(args, result)


def cmd_serve(args: argparse.Namespace) -> int:
    from studio_backend.bench.serve import ServeBenchConfig, run_serve_bench

    cfg = ServeBenchConfig(
        url=args.url, batches=args.batch, input_tokens=args.input_tokens,
        output_tokens=args.output_tokens, model=args.model, name=args.name,
    )  # fmt: skip
    return _store(args, run_serve_bench(cfg, progress=print))


def cmd_import(args: argparse.Namespace) -> int:
    from studio_backend.bench.results import import_result
    from studio_backend.workspace import open_workspace

    path = existing_file(args.file, "benchmark JSON")
    ws = open_workspace(args.workspace)
    try:
        run_id = import_result(ws, path)
    finally:
        ws.close()
    print(f"imported run {run_id} from {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from studio_backend.bench.results import export_run, write_json
    from studio_backend.workspace import open_workspace

    ws = open_workspace(args.workspace, read_only=True)  # works while the studio runs
    try:
        doc = export_run(ws, args.run_id)
    finally:
        ws.close()
    out = _out_path(args.out)
    doc.pop("format", None)
    write_json(doc, out)
    print(f"wrote {out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from studio_backend.bench.results import list_runs
    from studio_backend.workspace import open_workspace

    ws = open_workspace(args.workspace, read_only=True)  # works while the studio runs
    try:
        runs = list_runs(ws)
    finally:
        ws.close()
    if runs.empty:
        print("no benchmark runs yet: `studio bench kernels --preset tiny`")
        return 0
    print(runs.to_string(index=False))
    return 0
