"""``studio render``: batch export of activation surfaces (PNG or HTML) for a dump or run."""

from __future__ import annotations

import argparse
from pathlib import Path

from studio_backend.errors import StudioError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="export 3D token x channel surfaces of a dump / run (PNG or HTML), on all cores",
    )
    p.add_argument("target", metavar="DUMP|RUN", help="a dump directory (ingested first) or run id")
    p.add_argument(
        "--layer-pattern", required=True, help=r"regex on module names, e.g. layers\.10\."
    )
    p.add_argument("--io", choices=("input", "output"), default="output", help="default: output")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--format", choices=("png", "html"), default="png", help="default: png")
    p.add_argument("--step", type=int, default=0, help="step to render (default 0 = prefill)")
    p.add_argument("--all-steps", action="store_true", help="render every step")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--absolute", action="store_true", help="plot |x|")
    p.add_argument("--log", action="store_true", help="plot log10(1+|x|)")
    p.set_defaults(func=cmd_render)


def _run_id(ws, target: str) -> str:
    """The run ``target`` names; a dump folder not ingested yet is ingested first."""
    from studio_backend.dumps.cli_read import stored_run

    run_id = stored_run(ws, target)
    if run_id is not None:
        return run_id
    from studio_backend.dumps.ingest import ingest_dump

    return ingest_dump(ws, Path(target).expanduser().resolve())


def cmd_render(args: argparse.Namespace) -> int:
    from studio_backend.timeline import mark

    mark("cli: parsed")
    # Workers first: they import PyVista and open their off-screen context on the other cores
    # while this process imports torch / DuckDB / pandas, opens the workspace and reads.
    from studio_backend.analysis.render_pool import start_pool

    pool = start_pool(args.format, args.workers)
    try:
        code = _render(args, pool)
    except BaseException:
        pool.terminate()  # a bad run id or pattern: do not wait for the workers' warm-up
        raise
    pool.shutdown(wait=True)
    mark("cli: pool closed")
    return code


def _render(args: argparse.Namespace, pool) -> int:  # noqa: ANN001
    from studio_backend.analysis.render import render
    from studio_backend.timeline import mark
    from studio_backend.workspace import open_workspace

    try:
        import studio_backend.dumps.query  # noqa: F401
    except ModuleNotFoundError:
        raise StudioError("the dumps package is not installed in this build") from None
    mark("cli: imported")
    ws = open_workspace(args.workspace)
    mark("cli: workspace open")
    try:
        run_id = _run_id(ws, args.target)
        files = render(
            ws,
            run_id,
            Path(args.out).expanduser().resolve(),
            pattern=args.layer_pattern,
            io=args.io,
            step=None if args.all_steps else args.step,
            fmt=args.format,
            absolute=args.absolute,
            log=args.log,
            progress=lambda p: print(p),
            pool=pool,
        )
        ws.log("render", f"rendered {len(files)} {args.format} surfaces of run {run_id}")
    finally:
        ws.close()
    return 0
