"""The ``studio`` command line: every action the UI offers, without the UI.

Each capability package contributes a ``cli`` module with ``register(subparsers)``; this file
only assembles them and turns expected failures into one clear line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from studio_backend.errors import StudioError
from studio_backend.workspace.faults import EXIT_INPUT, EXIT_INTERNAL, explain, report_internal

COMMAND_MODULES = (
    "studio_backend.workspace.cli",
    "studio_backend.models.cli",
    "studio_backend.engines.cli",
    "studio_backend.dumps.cli",
    "studio_backend.analysis.cli",
    "studio_backend.compare.cli",
    "studio_backend.moe.cli",
    "studio_backend.bench.cli",
    "studio_backend.dsa.cli",
    "studio_backend.trace.cli",
    "studio_backend.launch.cli",
)


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is not built (yet)
        return False


# Global options: accepted before the command (`studio --workspace W info`) and after it, at
# any depth (`studio info --workspace W`, `studio dsa ingest F --workspace W`).
GLOBAL_OPTIONS = (
    (("--workspace",), {"metavar": "DIR",
                        "help": "workspace directory (default: $STUDIO_WORKSPACE or ./workspace)"}),
)  # fmt: skip


def _add_globals_below(parser: argparse.ArgumentParser, seen: set[int]) -> None:
    """Give every sub-command parser the global options. Their default is SUPPRESS, so a
    sub-command that is not given one keeps the value parsed before the command."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for sub in action.choices.values():
            if id(sub) in seen:  # aliases share one parser
                continue
            seen.add(id(sub))
            for flags, kw in GLOBAL_OPTIONS:
                if not any(f in sub._option_string_actions for f in flags):
                    sub.add_argument(*flags, **kw, default=argparse.SUPPRESS)
            _add_globals_below(sub, seen)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="Inference Inspection Studio: see inside a served LLM.",
    )
    for flags, kw in GLOBAL_OPTIONS:
        parser.add_argument(*flags, **kw, default=None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if _present(name):
            importlib.import_module(name).register(sub)
    _add_globals_below(parser, set())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except StudioError as exc:
        print(f"studio {args.command}: {safe_text(str(exc))}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_INPUT)
    except BaseException as exc:  # noqa: BLE001 - a person never sees a raw traceback
        if isinstance(exc, SystemExit):
            raise
        known = explain(exc)
        code, line = known if known else (EXIT_INTERNAL, report_internal(args.command, exc))
        print(f"studio {args.command}: {safe_text(line)}", file=sys.stderr)
        return code
    return int(result or 0)


def safe_text(text: str) -> str:
    """Control characters (ANSI escapes in file names) shown escaped, never sent to a terminal."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


if __name__ == "__main__":
    sys.exit(main())
