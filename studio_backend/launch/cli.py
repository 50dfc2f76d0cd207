"""``studio launch``, ``studio launches`` and ``studio capture``."""

from __future__ import annotations

import argparse
import json

from studio_backend.errors import InputError, StudioError
from studio_backend.launch.spec import (
    DTYPES,
    DUMP_TOOLS,
    ENGINES,
    EXPERT_RECORDER_MODES,
    DumpSettings,
    LaunchSpec,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "launch",
        help="start an inference server (reference, vllm, vllm-ascend, sglang) with dump hooks",
        description="Start a server in its own process group, supervised through the workspace. "
        "Arguments after `--` are passed to the engine unchanged.",
    )
    p.add_argument("--engine", choices=ENGINES, required=True, help="which server to start")
    p.add_argument(
        "--model", required=True, metavar="DIR", help="Hugging Face checkpoint directory"
    )
    p.add_argument(
        "--python",
        metavar="EXE",
        help="the engine's Python interpreter (vllm default: STUDIO_VLLM_PYTHON, else "
        "<checkout>/.venv-vllm/bin/python when present, else this studio's python)",
    )
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--port", type=int, default=8017, help="port (default 8017)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--allow-remote", action="store_true", help="allow a --host other than loopback")
    p.add_argument("--max-model-len", type=int, default=2000, help="context length (default 2000)")
    p.add_argument(
        "--no-enforce-eager", action="store_true", help="allow graph mode (hooks may miss layers)"
    )
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="model dtype (default auto)")
    p.add_argument("--no-ascend", action="store_true", help="sglang: leave out the Ascend backends")
    p.add_argument(
        "--recorder-mode",
        choices=EXPERT_RECORDER_MODES,
        help="sglang: expert distribution recorder",
    )
    d = p.add_argument_group("dump")
    d.add_argument("--dump-tool", choices=DUMP_TOOLS, help="dump with this tool")
    d.add_argument("--dump-path", metavar="DIR", help="where the dump is written")
    d.add_argument(
        "--layer-name",
        default="root.model.layers.*",
        help="msit layer pattern ('*' only, starts with root)",
    )
    d.add_argument(
        "--token-range",
        default="0:2000",
        metavar="START:END",
        help="steps to dump, END exclusive (default 0:2000)",
    )
    d.add_argument("--mode", default="module", help="msit mode: module, api or module,api")
    d.add_argument(
        "--api",
        action="append",
        default=[],
        metavar="NAME",
        help="API to dump, e.g. torch_npu.npu_kronecker_quant",
    )
    d.add_argument(
        "--statistics-mode",
        type=int,
        default=0,
        choices=(0, 1, 2),
        help="msit: 0 tensors, 1 statistics, 2 both",
    )
    d.add_argument(
        "--msprobe-task", default="tensor", choices=("tensor", "statistics"), help="msprobe task"
    )
    d.add_argument(
        "--msprobe-level", default="L0", choices=("L0", "L1", "mix"), help="msprobe level"
    )
    p.add_argument(
        "--print-command",
        action="store_true",
        help="print the command and environment, start nothing",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=600,
        metavar="S",
        help="wait up to S seconds for /health (0: return at once)",
    )
    p.add_argument("extra", nargs=argparse.REMAINDER, help="-- then extra engine arguments")
    p.set_defaults(func=cmd_launch)

    ls = sub.add_parser("launches", help="list launches with their state; stop one or show its log")
    ls.add_argument(
        "--stop",
        metavar="ID",
        help="stop this launch (SIGTERM to the server, then its process group, then SIGKILL)",
    )
    ls.add_argument("--log", metavar="ID", help="print the last log lines of this launch")
    ls.add_argument("--lines", type=int, default=40, help="log lines to print (default 40)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_launches)

    c = sub.add_parser(
        "capture", help="send the dump request (text truncated to N tokens) to a launch"
    )
    c.add_argument(
        "--launch", metavar="ID", help="launch to send to (default: the newest ready one)"
    )
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--text-file", metavar="FILE", help="UTF-8 text file")
    src.add_argument("--text", help="the text itself")
    c.add_argument(
        "--tokens", type=int, default=2000, help="truncate to this many tokens (default 2000)"
    )
    c.add_argument("--max-tokens", type=int, default=1, help="tokens to generate (default 1)")
    c.add_argument("--no-ingest", action="store_true", help="do not ingest the dump afterwards")
    c.set_defaults(func=cmd_capture)


def _token_range(raw: str) -> tuple[int, int]:
    try:
        start, end = (int(x) for x in raw.split(":"))
    except ValueError as exc:
        raise InputError(f"--token-range {raw}", "expected START:END, e.g. 0:2000") from exc
    return start, end


def spec_from_args(args: argparse.Namespace) -> LaunchSpec:
    start, end = _token_range(args.token_range)
    extra = list(args.extra or [])
    if extra and extra[0] == "--":
        extra = extra[1:]
    dump = DumpSettings(
        tool=args.dump_tool,
        dump_path=args.dump_path or "",
        layer_name=args.layer_name,
        token_start=start,
        token_end=end,
        modes=tuple(m.strip() for m in args.mode.split(",") if m.strip()),
        api_list=tuple(args.api),
        statistics_mode=args.statistics_mode,
        msprobe_task=args.msprobe_task,
        msprobe_level=args.msprobe_level,
    )
    return LaunchSpec(
        engine=args.engine, model_dir=args.model, tp=args.tp, port=args.port, host=args.host,
        max_model_len=args.max_model_len, enforce_eager=not args.no_enforce_eager,
        dtype=args.dtype, extra_args=tuple(extra), dump=dump, ascend=not args.no_ascend,
        expert_recorder_mode=args.recorder_mode, python=args.python,
    )  # fmt: skip


def _open(args: argparse.Namespace):
    from studio_backend.workspace import open_workspace

    return open_workspace(args.workspace)


def cmd_launch(args: argparse.Namespace) -> int:
    from studio_backend.launch.supervisor import Supervisor

    spec = spec_from_args(args)
    ws = _open(args)
    try:
        sup = Supervisor(ws)
        if args.print_command:
            _, _, cmd = sup.prepare(spec, allow_remote=args.allow_remote)
            print(cmd.shell_text())
            for path, content in cmd.files.items():
                print(f"# {path}\n{content}")
            return 0
        launch = sup.start(spec, allow_remote=args.allow_remote)
        print(f"launch {launch.launch_id}: PID {launch.pid}, log {launch.log_path}")
        if args.wait > 0:
            launch = sup.wait_status(launch.launch_id, ("ready",), args.wait)
            if launch.status != "ready":
                raise StudioError(f"launch {launch.launch_id} {launch.status}: {launch.message}")
            print(f"ready at {launch.base_url}")
        sup.close()
    finally:
        ws.close()
    return 0


def cmd_launches(args: argparse.Namespace) -> int:
    from studio_backend.launch.supervisor import Supervisor
    from studio_backend.workspace import open_workspace

    # Listing and --log only read: they also work while the studio owns the workspace (its
    # read service answers). There the studio watches the launches, so this process neither
    # re-attaches nor marks any (that would write); --stop writes and needs the workspace.
    ws = open_workspace(args.workspace, read_only=not args.stop)
    try:
        sup = Supervisor(ws, reattach=not getattr(ws, "read_only", False))
        if args.stop:
            launch = sup.stop(args.stop)
            print(f"launch {launch.launch_id} {launch.status}")
        if args.log:
            print("\n".join(sup.log_tail(args.log, args.lines)))
            return 0
        rows = [sup.describe(x) for x in sup.list()]
        sup.close()
    finally:
        ws.close()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print("no launches in this workspace yet: `studio launch --engine reference --model DIR`")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            "launch", "engine", "status", "url", "pid", "exit", "tp", "dump", title="launches"
        )
        for r in rows:
            table.add_row(r["launch"], r["engine"], r["status"], r["url"], str(r["pid"] or ""),
                          "" if r["exit_code"] is None else str(r["exit_code"]), str(r["tp"]), r["dump"])  # fmt: skip
        Console().print(table)
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from studio_backend.launch import ingest
    from studio_backend.launch.capture import capture
    from studio_backend.launch.supervisor import Supervisor

    ws = _open(args)
    try:
        sup = Supervisor(ws)
        if args.launch:
            launch = sup.get(args.launch)
        else:
            ready = [x for x in sup.list() if x.status == "ready"]
            if not ready:
                raise StudioError(
                    "no ready launch in this workspace: start one with `studio launch`"
                )
            launch = ready[0]
        result = capture(ws, launch, text_file=args.text_file, text=args.text,
                         n_tokens=args.tokens, max_tokens=args.max_tokens)  # fmt: skip
        print(
            f"capture {result.capture_id}: {result.prompt.n_tokens} tokens sent to {launch.launch_id}"
        )
        print(f"completion: {result.completion!r}")
        for root in result.dump_roots:
            print(f"dump folder: {root}")
        if not args.no_ingest and result.dump_roots:
            if ingest.available():
                for run_id in ingest.ingest_capture(ws, result.capture_id):
                    print(f"ingested as run {run_id}")
            else:
                print(
                    "dump ingest is not installed in this studio: ingest the folder(s) above later"
                )
        sup.close()
    finally:
        ws.close()
    return 0
