"""``studio serve-reference`` and ``studio demo``."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from studio_backend.engines.reference.dump_tools import TOOLS
from studio_backend.errors import InputError

if TYPE_CHECKING:
    from studio_backend.engines.reference.dumping import DumpOptions


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve-reference",
        help="serve a Qwen3-MoE checkpoint with the tensor-parallel CPU reference engine "
        "(OpenAI /v1/completions), optionally dumping activations",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="HF-format Qwen3-MoE directory")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (rank processes)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    add_dump_args(p)
    p.set_defaults(func=cmd_serve)

    d = sub.add_parser(
        "demo",
        help="create the tiny demo model, serve it with tp=2 and msit dumps, send the bundled "
        "capture text, ingest the dump and fill expert load, a DSA trace, a profile and a "
        "module trace: every page has data",
    )
    d.add_argument("--tp", type=int, default=2, help="tensor-parallel size")
    d.add_argument("--max-tokens", type=int, default=4, help="tokens to generate (= steps)")
    d.set_defaults(func=cmd_demo)


def add_dump_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dumps (msit_llm DumpConfig options)")
    g.add_argument("--dump-tool", choices=TOOLS, default=None, help="enable dumps with this tool")
    g.add_argument("--dump-path", default="dumps", metavar="DIR", help="dump directory")
    g.add_argument("--token-range", default="0", help="steps to dump: '0-9', '0,1,5' (0 = prefill)")
    g.add_argument(
        "--layer-name", default=None, help="msit layer filter, '*' only, e.g. 'root.model.layers.*'"
    )
    g.add_argument("--dump-mode", default="module", help="module, api or module,api")
    g.add_argument("--api-list", default="", help="api names for api mode: npu_kronecker_quant")
    g.add_argument("--tensor-part", type=int, default=2, help="0 inputs, 1 outputs, 2 both")
    g.add_argument(
        "--dump-statistics-mode", type=int, default=0, help="0 tensors, 1 statistics.csv, 2 both"
    )
    g.add_argument(
        "--kronecker", action="store_true", help="MoE experts call npu_kronecker_quant (observed)"
    )


def parse_token_range(raw: str) -> list[int]:
    out: list[int] = []
    try:
        for part in raw.split(","):
            part = part.strip()
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                out.extend(range(a, b + 1))
            elif part:
                out.append(int(part))
    except ValueError as exc:
        raise InputError(raw, "--token-range must look like '0-9' or '0,1,5'") from exc
    if not out or min(out) < 0:
        raise InputError(raw, "--token-range needs non-negative steps")
    return out


def dump_options(args: argparse.Namespace) -> DumpOptions | None:
    from studio_backend.engines.reference.dumping import DumpOptions  # torch: only when dumping

    if not args.dump_tool:
        return None
    opts = DumpOptions(
        tool=args.dump_tool,
        dump_path=args.dump_path,
        token_range=parse_token_range(args.token_range),
        layer_name=args.layer_name,
        mode=[m.strip() for m in args.dump_mode.split(",") if m.strip()],
        api_list=[a.strip() for a in args.api_list.split(",") if a.strip()],
        tensor_part=args.tensor_part,
        dump_statistics_mode=args.dump_statistics_mode,
        kronecker=args.kronecker,
    )
    opts.check()
    return opts


def cmd_serve(args: argparse.Namespace) -> int:
    from studio_backend.engines.reference.launcher import start_server
    from studio_backend.paths import existing_dir
    from studio_backend.procs import stop_signals

    model = existing_dir(args.model, "model directory")
    server = start_server(
        model, tp=args.tp, port=args.port, host=args.host, dump=dump_options(args)
    )
    stop = {"requested": False}
    with stop_signals(lambda: stop.update(requested=True)):
        try:
            server.wait_ready()
            print(f"serving {model.name} on {server.url} (tp={args.tp})", flush=True)
            if server.dump_root:
                print(f"dumping to {server.dump_root}", flush=True)
            while not stop["requested"] and server.alive():
                time.sleep(0.2)
        finally:
            server.stop()
    if not stop["requested"]:
        print("a rank process exited; server stopped", flush=True)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from studio_backend.engines.demo_fill import run_full_demo
    from studio_backend.workspace import open_workspace

    ws = open_workspace(args.workspace)
    try:

        def progress(frac: float, message: str) -> None:
            print(f"[{frac:4.0%}] {message}", flush=True)

        full = run_full_demo(ws, progress, tp=args.tp, max_tokens=args.max_tokens)
    finally:
        ws.close()
    for line in full.lines:
        print(line.replace("`", ""))
    return 0
