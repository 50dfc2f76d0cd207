"""Global options (--workspace) work before the command and after it, at any depth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from studio_backend.cli import build_parser, main


def _leaves(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def test_every_command_accepts_workspace_after_it() -> None:
    leaves = list(_leaves(build_parser()))
    assert len(leaves) > 30
    missing = [" ".join(p) for p, sub in leaves if "--workspace" not in sub._option_string_actions]
    assert missing == []


@pytest.mark.parametrize("where", ["before", "after"])
def test_info_workspace_before_or_after(tmp_path: Path, capsys, where: str) -> None:
    ws = tmp_path / "ws"
    argv = ["--workspace", str(ws), "info", "--json"]
    if where == "after":
        argv = ["info", "--json", "--workspace", str(ws)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["workspace"] == str(ws)


def test_nested_command_and_precedence(tmp_path: Path, capsys, monkeypatch) -> None:
    """After `dsa ingest` the option reaches the nested command; given twice, the one after
    the command wins; not given after it, the one before it stays."""
    monkeypatch.delenv("STUDIO_WORKSPACE", raising=False)
    args = build_parser().parse_args(["--workspace", "A", "dsa", "ingest", "f.jsonl"])
    assert args.workspace == "A"
    args = build_parser().parse_args(["--workspace", "A", "dsa", "ingest", "f", "--workspace", "B"])
    assert args.workspace == "B"
    args = build_parser().parse_args(["dsa", "ingest", "f"])
    assert args.workspace is None
    from studio_backend.dsa.selfcheck import selfcheck

    selfcheck(tmp_path / "t", requests=1, steps=2, layers=2)
    ws = tmp_path / "nested_ws"
    assert main(["dsa", "ingest", str(tmp_path / "t" / "trace_steps.jsonl"),
                 "--workspace", str(ws)]) == 0  # fmt: skip
    assert "4 rows" in capsys.readouterr().out and (ws / "studio.duckdb").is_file()
