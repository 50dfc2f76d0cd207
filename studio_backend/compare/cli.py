"""``studio compare RUN_A RUN_B``: where two runs part (the Compare page's twin).

Exit codes follow ``diff``: 0 the runs agree within the thresholds, 1 they diverge (the first
diverging tensor is printed), 2 bad input (one line, never a traceback).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from studio_backend.errors import InputError

EXIT_SAME, EXIT_DIVERGED = 0, 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two runs across engines, TP layouts and dtypes: first divergence, "
        "ranked modules, unaligned tensors (exit 0 agree, 1 diverge)",
    )
    p.add_argument("run_a", metavar="RUN_A", help="reference: run id, run name or dump directory")
    p.add_argument("run_b", metavar="RUN_B", help="run under test: run id, run name or dump dir")
    p.add_argument("--steps", metavar="LIST", help="step positions to compare, e.g. 0 or 0,1 "
                   "(0 = each run's first step, the prefill; default: all)")  # fmt: skip
    p.add_argument("--modules", metavar="REGEX", help="only modules whose name matches REGEX")
    p.add_argument("--threshold", type=float, metavar="X", help="rel_diff above which a tensor "
                   "diverges (default: by dtype pair, docs/COMPARE.md)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the whole result as one JSON object")
    p.add_argument("--per-token", action="store_true", help="with --json: every metric per token")
    p.add_argument("--top", type=int, default=10, help="ranked modules to print (default 10)")
    p.set_defaults(func=cmd_compare)


def parse_steps(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        steps = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise InputError(f"--steps {text}", "expected step positions like 0 or 0,1") from None
    if not steps:
        raise InputError(f"--steps {text}", "expected at least one step position")
    return steps


def resolve_run(ws, target: str) -> str:  # noqa: ANN001 - a Workspace
    """A run id, a unique run name, or a dump directory (ingested first)."""
    from studio_backend.dumps.query import list_runs

    runs = list_runs(ws)
    if target in set(runs["run_id"]):
        return target
    named = runs[runs["name"] == target]
    if len(named) == 1:
        return str(named.iloc[0]["run_id"])
    if len(named) > 1:
        raise InputError(target, f"names {len(named)} runs: use a run id "
                         f"({', '.join(named['run_id'])})")  # fmt: skip
    path = Path(target).expanduser().resolve()
    if not path.is_dir():
        raise InputError(target, "is neither a run id or name of this workspace nor a dump folder")
    if getattr(ws, "read_only", False):  # the running studio owns the workspace: no ingest here
        from studio_backend.dumps.cli_read import require_stored

        return require_stored(ws, str(path))
    from studio_backend.dumps.ingest import ingest_dump

    return ingest_dump(ws, path)


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.3e}"


def _print(res, top: int) -> None:  # noqa: ANN001 - a CompareResult or StatsResult
    print(f"A (reference) {res.run_a}  vs  B {res.run_b}")
    print(f"naming: A {res.conventions[0] or 'unknown'}, B {res.conventions[1] or 'unknown'}; "
          f"{len(res.table)} tensors compared, {len(res.unaligned)} not aligned")  # fmt: skip
    f = res.first
    if f is None:
        print("no divergence: every compared tensor is within its threshold")
    else:
        tok = "" if f.get("first_token") is None else f", first at token {f['first_token']}"
        print(f"FIRST DIVERGENCE: step {f['step']} {f['label']} (B: {f['module_b']}) "
              f"{f['metric']} {_fmt(f['value'])} > {_fmt(f['threshold'])}{tok}")  # fmt: skip
    if len(res.ranked):
        print(f"\nmodules ranked by the divergence they add ({res.ranked_by}):")
        for r in res.ranked.head(top).itertuples(index=False):
            print(f"  {_fmt(r.added):>10}  step {r.step}  {r.label}  (vs {r.versus})")
    if len(res.unaligned):
        print("\nnot aligned (first 20; --json lists all):")
        for r in res.unaligned.head(20).itertuples(index=False):
            print(f"  {r.run} step {r.step} {r.module} {r.io} {r.index}: {r.reason}")


def cmd_compare(args: argparse.Namespace) -> int:
    from studio_backend.compare.runs import Options, compare_any
    from studio_backend.workspace import open_workspace

    opts = Options(parse_steps(args.steps), args.modules, args.threshold)  # checked here, early
    ws = open_workspace(args.workspace, read_only=True)  # stored runs: also while the studio runs
    try:
        a, b = resolve_run(ws, args.run_a), resolve_run(ws, args.run_b)
        res = compare_any(ws, a, b, opts)
    finally:
        ws.close()
    if args.json:
        print(json.dumps(res.as_json(per_token=args.per_token), allow_nan=False))
    else:
        _print(res, args.top)
    return EXIT_SAME if res.first is None else EXIT_DIVERGED
