"""``studio ingest``, ``studio stitch`` and ``studio stats``: dumps without the UI."""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from studio_backend.dumps.cluster.cli_args import add_ray_args
from studio_backend.errors import InputError
from studio_backend.paths import existing_file
from studio_backend.workspace import open_workspace

TOP_CHANNELS = 8


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="ingest an msit_llm / msprobe / SGLang dump (stitch, verify, statistics)"
    )
    p.add_argument("dump", metavar="DIR", help="the dump folder or any folder inside it")
    p.add_argument("--watch", action="store_true", help="keep ingesting while the dump is written")
    p.add_argument("--name", help="a name for the run (default: the dump folder's name)")
    p.add_argument(
        "--model-config", metavar="FILE", help="config.json with head counts (QKV split)"
    )
    p.add_argument(
        "--idle-exit", type=float, metavar="S", help="with --watch: stop after S idle seconds"
    )
    p.add_argument("--no-stats", action="store_true", help="skip statistics (stitch only)")
    p.add_argument("--token-axis", action="append", default=[], metavar="REGEX=N",
                   help="modules matching REGEX have N leading token dims (1 = [tokens, ...], "
                   "2 = [batch, seq, ...]); repeatable; default: decided per tensor")  # fmt: skip
    p.add_argument("--stats-workers", type=int, default=0, metavar="N",
                   help="compute statistics in N processes (without --watch; default: in-process)")  # fmt: skip
    add_ray_args(p)
    p.set_defaults(func=cmd_ingest)

    s = sub.add_parser("stitch", help="stitch a dump's rank shards into unsharded .npy files")
    s.add_argument("dump", metavar="DUMP", help="the dump folder or any folder inside it")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder")
    s.add_argument("--format", default="npy", choices=["npy"], help="output format (npy, float32)")
    s.add_argument(
        "--model-config", metavar="FILE", help="config.json with head counts (QKV split)"
    )
    s.add_argument("--steps", type=int, nargs="+", metavar="N", help="only these steps")
    s.add_argument(
        "--flat", action="store_true", help="one step without step<N>/ (the seed's layout)"
    )
    add_ray_args(s)
    s.set_defaults(func=cmd_stitch)

    t = sub.add_parser(
        "stats",
        help="statistics of every stitched tensor of a dump (stored ones also while the studio "
        "runs)",
    )
    t.add_argument(
        "dump", metavar="DUMP",
        help="the dump folder or any folder inside it (ingested first), or a run id",
    )  # fmt: skip
    t.add_argument("--json", action="store_true", help="one JSON record per tensor (JSON lines)")
    t.add_argument("--module", metavar="REGEX", help="only modules matching this regex")
    t.add_argument("--step", type=int, metavar="N", help="only this step")
    t.add_argument("--ranks", action="store_true", help="also each rank's own tensor")
    t.add_argument(
        "--model-config", metavar="FILE", help="config.json with head counts (QKV split)"
    )
    add_ray_args(t)
    t.set_defaults(func=cmd_stats)

    a = sub.add_parser(
        "token-axis",
        help="override which leading dims of a dump's tensors index tokens (statistics follow)",
    )
    a.add_argument("dump", metavar="DUMP", help="the dump folder or any folder inside it")
    a.add_argument("--module", required=True, metavar="REGEX", help="modules matching this regex")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--token-dims", type=int, metavar="N",
                   help="N leading dims are tokens: 1 = [tokens, ...], 2 = [batch, seq, ...]")  # fmt: skip
    g.add_argument("--auto", action="store_true", help="drop the override: decide by the rules")
    a.set_defaults(func=cmd_token_axis)

    k = sub.add_parser(
        "pack",
        help="copy a run's replicated stitched tensors into the workspace (before the dump goes)",
    )
    k.add_argument("dump", metavar="DUMP", help="the ingested dump folder or any folder inside it")
    k.set_defaults(func=cmd_pack)

    from studio_backend.dumps.cli_read import register_runs

    register_runs(sub)


def _config(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    f = existing_file(path, "model config")
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f, f"not JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise InputError(f, "expected a JSON object (a model's config.json)")
    return cfg


def _bar():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]ingest[/]"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} MB/s  queue {task.fields[queue]}  stitched {task.fields[stitched]}"
                   "  errors {task.fields[errors]}"),
        TimeElapsedColumn(),
    )  # fmt: skip


def _update(bar, task, p) -> None:
    bar.update(task, completed=p.files_done, total=max(p.files_seen, p.files_done) or None,
               rate=p.mb_per_s, queue=p.queue_depth, stitched=p.stitched, errors=p.errors)  # fmt: skip


def _summary(ws, run_id: str) -> str:
    verdicts = dict(
        ws.cursor()
        .execute(
            "SELECT verdict, count(*) FROM dump_stitch_report WHERE run_id = ? GROUP BY 1", [run_id]
        )
        .fetchall()
    )
    errors = (
        ws.cursor()
        .execute("SELECT count(*) FROM dump_ingest_errors WHERE run_id = ?", [run_id])
        .fetchone()[0]
    )
    v = ", ".join(f"{k} {n}" for k, n in sorted(verdicts.items())) or "nothing stitched"
    out = f"run {run_id}: {v}; {errors} ingest error(s)"
    bad = verdicts.get("failed", 0) + verdicts.get("unknown", 0)
    if bad:
        out += (f"\n{bad} tensor(s) failed or unknown: no stitched tensor was kept or written "
                "(their rank tensors stay: `studio stats DUMP --ranks`, the Dumps page)")  # fmt: skip
    shared = (
        ws.cursor()
        .execute(
            "SELECT count(DISTINCT module) FROM dump_shared_modules WHERE run_id = ?", [run_id]
        )
        .fetchone()[0]
    )
    if shared:
        out += (f"\n{shared} shared module(s) flagged (one object under several names or for "
                "every layer: the dump keeps one name / the last call); see the Dumps page")  # fmt: skip
    return out


def _axis_specs(specs: list[str]) -> list[tuple[str, int | None]]:
    """``REGEX=N`` (or ``REGEX=auto``) pairs of ``--token-axis``."""
    out: list[tuple[str, int | None]] = []
    for spec in specs:
        regex, sep, n = spec.rpartition("=")
        if not sep or not regex or not (n.isdigit() or n == "auto"):
            raise InputError(
                f"--token-axis {spec}", "expected REGEX=N (N leading token dims) or REGEX=auto"
            )
        try:
            re.compile(regex)
        except re.error as exc:
            raise InputError(regex, f"not a valid regular expression ({exc})") from None
        out.append((regex, None if n == "auto" else int(n)))
    return out


def cmd_ingest(args: argparse.Namespace) -> int:
    import sys

    from studio_backend.cli import safe_text
    from studio_backend.dumps.cluster import cli_args as ray_args
    from studio_backend.dumps.cluster.runtime import NodeLost

    cfg = _config(args.model_config)
    axis_specs = _axis_specs(getattr(args, "token_axis", None) or [])
    ws = open_workspace(args.workspace)
    try:
        with _bar() as bar:
            task = bar.add_task("ingest", total=None, rate=0.0, queue=0, stitched=0, errors=0)
            if args.watch and args.ray:
                raise InputError("--watch", "watches a dump on this machine; with --ray, run "
                                 "the ingest again when more of the dump is written (it resumes)")  # fmt: skip
            if not args.watch:
                try:
                    run = ray_args.ingest(ws, args, model_config=cfg, with_stats=not args.no_stats,
                                          name=args.name, stats_workers=max(0, args.stats_workers),
                                          on_progress=lambda p: _update(bar, task, p))  # fmt: skip
                except NodeLost as exc:  # the rest is in: say what, and how to resume
                    print(safe_text(f"studio ingest: {exc}"), file=sys.stderr)
                    _print_errors(ws, exc.run_id)
                    return 1
            else:
                run = _watch(ws, args, cfg, bar, task)
        if axis_specs:
            from studio_backend.dumps import axis_store

            for regex, k in axis_specs:
                counts = axis_store.set_override(ws, run, regex, k)
                print(f"token axis /{regex}/ -> {k if k is not None else 'auto'}: "
                      f"{counts['changed']} of {counts['tensors']} tensor(s) changed")  # fmt: skip
            if not args.no_stats:
                axis_store.restat(ws, run)
        print(_summary(ws, run))
        errors = _print_errors(ws, run)
    finally:
        ws.close()
    return 1 if errors else 0  # docs/RELIABILITY.md: finished, with problems it reported


# notes, not problems: nothing was lost or left unstitched (exit 0 with only these)
NOTE_KINDS = ("unknown_class", "rank_order", "shared_modules")


def _watch(ws, args: argparse.Namespace, cfg: dict[str, Any] | None, bar, task) -> str:
    """``ingest --watch`` until Ctrl-C / SIGTERM (or ``--idle-exit``): the run id."""
    from studio_backend.dumps.watch import DumpWatcher
    from studio_backend.procs import stop_signals

    # Ctrl-C / SIGTERM end watching as a flag, never as an exception: one raised while the
    # watcher starts its threads left them running and the process hung (CI).
    stop = {"now": False}
    with stop_signals(lambda: stop.update(now=True)):
        w = DumpWatcher(
            ws, args.dump, args.name, model_config=cfg, with_stats=not args.no_stats
        ).start()
        idle_since = time.monotonic()
        last = -1
        try:
            while not stop["now"]:
                time.sleep(0.2)
                p = w.progress
                if p is not None:
                    _update(bar, task, p)
                    if p.files_done != last:
                        last, idle_since = p.files_done, time.monotonic()
                if args.idle_exit and time.monotonic() - idle_since > args.idle_exit and w.idle():
                    break
        except KeyboardInterrupt:
            pass
        w.stop(finish=True)
    if w.run_id is None:
        raise InputError(args.dump, "no dump appeared in this folder while watching")
    return w.run_id


def _print_errors(ws, run_id: str, limit: int = 8, cmd: str = "ingest") -> int:
    """One line per kind of problem on stderr (the first path and message, and how many);
    returns the number of error rows that are problems (not ``NOTE_KINDS``)."""
    import sys

    from studio_backend.cli import safe_text

    rows = ws.cursor().execute(
        "SELECT kind, count(*), arg_min(path, id), arg_min(message, id) FROM dump_ingest_errors "
        "WHERE run_id = ? GROUP BY kind ORDER BY min(id)", [run_id],
    ).fetchall()  # fmt: skip
    for kind, n, path, message in rows[:limit]:
        more = f" (and {n - 1} more)" if n > 1 else ""
        print(safe_text(f"studio {cmd}: {kind}: {path}: {message}{more}"), file=sys.stderr)
    return sum(n for kind, n, _p, _m in rows if kind not in NOTE_KINDS)


def cmd_stitch(args: argparse.Namespace) -> int:
    from studio_backend.dumps.cluster import cli_args as ray_args
    from studio_backend.dumps.export import export_npy

    ws = open_workspace(args.workspace)
    try:
        run = ray_args.ingest(ws, args, model_config=_config(args.model_config), with_stats=False)
        files = export_npy(ws, run, Path(args.out).expanduser().resolve(), args.steps, args.flat)
        print(f"wrote {len(files)} .npy files to {Path(args.out).resolve()}")
        print(_summary(ws, run))
        errors = _print_errors(ws, run, cmd="stitch")
    finally:
        ws.close()
    return 1 if errors else 0  # as ingest: finished, with problems it reported


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def stats_records(
    ws, run_id: str, module: str | None, step: int | None, ranks: bool
) -> list[dict[str, Any]]:
    """One record per stitched tensor (and per rank tensor with ``ranks``), in dump order."""
    import pandas as pd

    from studio_backend.dumps import stats as stats_mod
    from studio_backend.dumps.query import find_tensors, load_tensor

    if module:
        try:
            re.compile(module)
        except re.error as exc:
            raise InputError(module, f"not a valid regular expression ({exc})") from exc
    df = find_tensors(ws, run_id, step=step, module_regex=module)
    st = (
        ws.cursor()
        .execute(
            "SELECT s.* FROM dump_stats s JOIN dump_tensors t USING (tensor_id) WHERE t.run_id = ?",
            [run_id],
        )
        .df()
        .set_index("tensor_id")
    )
    if ranks:
        df = (
            find_tensors(ws, run_id, step=step, module_regex=module, stitched=False)
            .pipe(lambda r: pd.concat([df, r]))
            .sort_values(
                ["step", "module", "io", "idx", "rank"], na_position="first", kind="stable"
            )
        )
    from studio_backend.dumps import axis_store
    from studio_backend.dumps.axis import matrix_shape

    out = []
    for row in df.itertuples(index=False):
        a = axis_store.get(ws, int(row.tensor_id))
        if row.tensor_id in st.index:
            s = st.loc[row.tensor_id].to_dict()
        else:
            t = load_tensor(ws, int(row.tensor_id))
            s = stats_mod.compute(t, token_dims=min(a.token_dims, t.dim())).as_row()
        n_tok, n_ch = matrix_shape(list(row.shape), min(a.token_dims, len(row.shape)))
        ch = [] if s.get("channel_absmax") is None else list(s["channel_absmax"])
        top = sorted(range(len(ch)), key=lambda c: -ch[c])[:TOP_CHANNELS]
        rec = {
            "step": int(row.step), "module": row.module + (f".{row.part}" if isinstance(row.part, str) else ""),
            "io": row.io, "index": int(row.idx),
            "rank": "stitched" if pd.isna(row.rank) else int(row.rank),
            "dtype": row.dtype, "shape": [int(x) for x in row.shape],
            "token_axis": a.layout, "axis_source": a.source, "tokens": n_tok, "channels": n_ch,
        }  # fmt: skip
        for k in ("min", "max", "mean", "std", "absmax", "nan_count", "inf_count", "kurtosis", "over6_count",
                  "massive_count"):  # fmt: skip
            v = s[k]
            rec[k] = _clean(int(v) if k.endswith("count") else float(v))
        rec["top_channels"] = [{"channel": c, "absmax": float(ch[c])} for c in top]
        out.append(rec)
    return out


def cmd_stats(args: argparse.Namespace) -> int:
    from studio_backend.dumps.cli_read import require_stored, stored_run
    from studio_backend.dumps.cluster import cli_args as ray_args

    cfg = _config(args.model_config)
    ws = open_workspace(args.workspace, read_only=True)  # stored statistics: while the studio runs
    try:
        if getattr(ws, "read_only", False):
            run = require_stored(ws, args.dump, cfg)
        else:  # ingest (or resume) first, here or over Ray: a new dump's statistics on the way
            local = not getattr(args, "ray", None)  # over Ray the folder lives on a node
            run = stored_run(ws, args.dump, cfg) if local and not Path(args.dump).is_dir() else None
            run = run or ray_args.ingest(ws, args, model_config=cfg)
        records = stats_records(ws, run, args.module, args.step, args.ranks)
        tool = None if records else tool_records(ws, run, args.module, args.step)
    finally:
        ws.close()
    if tool is not None and tool:
        return _print_tool(tool, args.json)
    if args.json:
        for r in records:
            print(json.dumps(r))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "step", "module", "io", "rank", "shape", "token axis", "absmax", "std", "kurtosis", ">6",
        "massive",
    )  # fmt: skip
    for r in records:
        table.add_row(str(r["step"]), r["module"], f"{r['io']}[{r['index']}]", str(r["rank"]), str(r["shape"]),
                      f"{r['token_axis']} {r['tokens']}x{r['channels']}",
                      f"{r['absmax']:.4g}", f"{r['std']:.4g}", f"{r['kurtosis']:.3g}" if r["kurtosis"] is not None
                      else "-", str(r["over6_count"]), str(r["massive_count"]))  # fmt: skip
    Console().print(table)
    return 0


def tool_records(ws, run_id: str, module: str | None, step: int | None) -> list[dict[str, Any]]:
    """The dump tool's own statistics (a statistics-only dump holds nothing else)."""
    import pandas as pd

    from studio_backend.dumps.query import tool_stats

    if module:
        try:
            re.compile(module)
        except re.error as exc:
            raise InputError(module, f"not a valid regular expression ({exc})") from exc
    df = tool_stats(ws, run_id, step=step, module_regex=module)
    out = []
    for r in df.itertuples(index=False):
        out.append({
            "step": None if pd.isna(r.step) else int(r.step), "module": r.module, "io": r.io,
            "index": int(r.idx), "arg_name": r.arg_name if isinstance(r.arg_name, str) else None,
            "rank": None if pd.isna(r.rank) else int(r.rank), "dtype": r.dtype, "shape": r.shape,
            "max": _clean(_f(r.max)), "min": _clean(_f(r.min)), "mean": _clean(_f(r.mean)),
            "norm": _clean(_f(r.norm)), "source": "tool",
        })  # fmt: skip
    return out


def _f(v: Any) -> float | None:
    import pandas as pd

    return None if v is None or pd.isna(v) else float(v)


def _print_tool(records: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        for r in records:
            print(json.dumps(r))
        return 0
    from rich.console import Console
    from rich.table import Table

    def g(v: Any) -> str:
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    table = Table("step", "module", "io", "rank", "dtype", "shape", "max", "min", "mean", "norm",
                  title="statistics written by the dump tool (no tensors in this dump)")  # fmt: skip
    for r in records:
        io = f"{r['io']}[{r['index']}]" + (f" {r['arg_name']}" if r["arg_name"] else "")
        table.add_row(g(r["step"]), r["module"], io, g(r["rank"]), str(r["dtype"]), str(r["shape"]),
                      g(r["max"]), g(r["min"]), g(r["mean"]), g(r["norm"]))  # fmt: skip
    Console().print(table)
    return 0


def cmd_token_axis(args: argparse.Namespace) -> int:
    from studio_backend.dumps import axis_store
    from studio_backend.dumps.ingest import ingest_dump

    if args.token_dims is None and not args.auto:
        raise InputError("token-axis", "give --token-dims N or --auto")
    ws = open_workspace(args.workspace)
    try:
        run = ingest_dump(ws, args.dump)
        counts = axis_store.set_override(
            ws, run, args.module, None if args.auto else args.token_dims
        )
        axis_store.restat(ws, run)
        from studio_backend.dumps.query import axes, find_tensors

        rows = find_tensors(ws, run, module_regex=args.module).merge(axes(ws, run), on="tensor_id")
        for r in rows.drop_duplicates(["module", "io", "idx", "arg_name", "part"]).itertuples():
            io = f"{r.io}[{r.idx}]" + (f" {r.arg_name}" if isinstance(r.arg_name, str) else "")
            print(f"{r.module} {io}: {[int(x) for x in r.shape]} as {r.layout} ({r.source})")
        print(f"run {run}: {counts['changed']} of {counts['tensors']} tensor(s) changed axis"
              + (f", {counts['skipped']} kept (fewer dims than {args.token_dims})" if counts["skipped"] else ""))  # fmt: skip
    finally:
        ws.close()
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from studio_backend.dumps.detect import detect
    from studio_backend.dumps.ingest import run_id_for
    from studio_backend.dumps.pack import pack_run

    run = run_id_for(detect(args.dump).root)
    ws = open_workspace(args.workspace)
    try:
        if not ws.cursor().execute("SELECT 1 FROM dump_runs WHERE run_id = ?", [run]).fetchone():
            raise InputError(args.dump, "this dump has not been ingested into the workspace")
        n, nbytes = pack_run(ws, run)
        print(f"run {run}: copied {n} tensor(s), {nbytes / 1e6:.1f} MB, into the workspace; "
              "its stitched tensors no longer need the dump folder")  # fmt: skip
    finally:
        ws.close()
    return 0
