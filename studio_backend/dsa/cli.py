"""``studio dsa``: selfcheck, ingest, summarize and run (DeepSeek sparse-attention traces)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from studio_backend.errors import InputError, StudioError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dsa", help="DeepSeek sparse-attention (DSA) top-k traces")
    dsa = p.add_subparsers(dest="dsa_command", metavar="ACTION", required=True)

    sc = dsa.add_parser(
        "selfcheck", help="write a SYNTHETIC seed-004 trace without torch and validate it"
    )
    sc.add_argument("--out", default="", help="output directory (default: a new temp dir)")
    sc.add_argument("--requests", type=int, default=2, help="requests (default 2)")
    sc.add_argument("--steps", type=int, default=3, help="decode steps per request (default 3)")
    sc.add_argument("--layers", type=int, default=2, help="layers (default 2)")
    sc.add_argument("--kv-block-size", type=int, default=16, help="tokens per KV block")
    sc.set_defaults(func=cmd_selfcheck)

    sm = dsa.add_parser("summarize", help="compute seed 004's summary.json from a trace")
    sm.add_argument("trace", help="trace_steps.jsonl or .jsonl.gz")
    sm.add_argument("--out", required=True, help="summary.json to write")
    sm.set_defaults(func=cmd_summarize)

    ig = dsa.add_parser(
        "ingest", help="ingest a trace, summary.json or Mooncake/Bailian prefix trace"
    )
    ig.add_argument("path", help="trace_steps.jsonl[.gz], summary.json or a prefix-trace .jsonl")
    ig.add_argument("--name", default=None, help="name shown in the studio (default: file name)")
    ig.add_argument(
        "--follow", type=float, default=0.0, metavar="SECONDS",
        help="keep reading the growing file until it stops growing for SECONDS",
    )  # fmt: skip
    ig.set_defaults(func=cmd_ingest)

    from studio_backend.dsa.run import register_run

    register_run(dsa)


def cmd_selfcheck(args: argparse.Namespace) -> int:
    from studio_backend.dsa.selfcheck import selfcheck

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="dsa_selfcheck_"))
    report = selfcheck(
        out, requests=args.requests, steps=args.steps, layers=args.layers,
        kv_block_size=args.kv_block_size,
    )  # fmt: skip
    print(f"{report['records']} records and summary.json valid (seed 004 schema): {out}")
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from studio_backend.dsa.summary import summarize_file
    from studio_backend.paths import existing_file

    trace = existing_file(args.trace, "trace")
    summary = summarize_file(trace)
    Path(args.out).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(
        f"{summary['unique_blocks']['count']} records summarised -> {args.out}"
        + (f" ({summary['bad_lines']} bad lines skipped)" if summary.get("bad_lines") else "")
    )
    if summary.get("truncated"):
        print(
            f"studio dsa: {trace}: FILE IS TRUNCATED: {summary['truncated']}"
            " (the summary covers the records before the cut)",
            file=sys.stderr,
        )
        return 1  # docs/RELIABILITY.md: finished, with a reported problem
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from studio_backend.dsa.ingest import ingest_path
    from studio_backend.paths import existing_file
    from studio_backend.workspace import open_workspace

    path = existing_file(args.path)
    ws = open_workspace(args.workspace)
    try:
        res = ingest_path(ws, path, name=args.name, follow_s=args.follow)
    finally:
        ws.close()
    print(res.describe())
    if res.truncated:
        print(
            f"studio dsa: {path}: FILE IS TRUNCATED: {res.truncated}"
            f" ({res.rows} rows before the cut are kept)",
            file=sys.stderr,
        )
        return 1  # docs/RELIABILITY.md: finished, with a reported problem
    return 0


__all__ = ["register", "InputError", "StudioError"]
