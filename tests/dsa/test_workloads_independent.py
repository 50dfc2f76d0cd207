"""The RULER and LongBench v2 readers on files written as the original tools write them; the
expected prompts come from the originals' code (tests/dsa/independent_workload_fixtures.py),
not from the readers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio_backend.dsa.workloads.longbench import load_longbench_v2
from studio_backend.dsa.workloads.ruler import load_ruler
from tests.dsa import independent_workload_fixtures as fx

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ruler_file(tmp_path: Path) -> tuple[Path, list[str]]:
    cases = fx.ruler_cases()
    path = tmp_path / "niah_single_1" / "validation.jsonl"
    path.parent.mkdir()
    fx.write_ruler(path, [line for line, _ in cases])
    return path, [prompt for _, prompt in cases]


def test_ruler_file_is_written_as_ruler_writes_it(ruler_file):
    path, _ = ruler_file
    raw = path.read_bytes()
    assert raw.isascii() and raw.endswith(b"\n")  # ensure_ascii=True, one object per line
    first = json.loads(raw.splitlines()[0])
    assert list(first) == [
        "index",
        "input",
        "outputs",
        "length",
        "length_w_model_temp",
        "answer_prefix",
        "token_position_answer",
    ]
    assert first["answer_prefix"] == (
        " The special magic number for obsequious-lamp mentioned in the provided text is"
    )
    assert first["input"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_ruler_prompts_equal_input_plus_answer_prefix(ruler_file):
    path, expected = ruler_file
    requests = load_ruler(path)
    assert [r.prompt for r in requests] == expected
    # niah.py's "index" repeats across same-shaped samples; requests stay distinct
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["index"] == lines[1]["index"]
    assert len({r.request_id for r in requests}) == len(expected)


def test_ruler_limit_keeps_the_first_lines(ruler_file):
    path, expected = ruler_file
    assert [r.prompt for r in load_ruler(path, limit=2)] == expected[:2]


def test_longbench_v2_data_json_prompts_equal_pred_py(tmp_path: Path):
    items = fx.longbench_items()
    path = tmp_path / "data.json"
    fx.write_longbench_json(path, items)
    requests = load_longbench_v2(path)
    assert [r.prompt for r in requests] == [fx.longbench_prompt(i) for i in items]
    assert requests[0].prompt == (
        "Please read the following text and answer the question below.\n\n<text>\n"
        "Revenue by quarter: Q1 10, Q2 12, Q3 19, Q4 11.\nEnd of report.\n</text>\n\n"
        "What is the correct answer to this question: Which quarter had the highest revenue?\n"
        "Choices:\n(A) Q1\n(B) Q2\n(C) Q3\n(D) Q4\n\n"
        'Format your response as follows: "The correct answer is (insert answer here)".'
    )


def test_longbench_v2_record_lines_export_reads_the_same(tmp_path: Path):
    items = fx.longbench_items()
    path = tmp_path / "data.jsonl"
    fx.write_longbench_jsonl(path, items)
    raw = path.read_bytes()
    assert raw.isascii() and b"one\\/two" in raw  # pandas escapes non-ASCII and "/"
    requests = load_longbench_v2(path, limit=2)
    assert [r.prompt for r in requests] == [fx.longbench_prompt(i) for i in items[:2]]


@pytest.mark.parametrize("max_len", [301, 300, 97])
def test_longbench_v2_middle_truncation_matches_query_llm(tmp_path: Path, max_len: int):
    items = fx.longbench_items()
    path = tmp_path / "data.json"
    fx.write_longbench_json(path, items)
    long_item = items[2]  # ASCII only: byte ids decode back without a split character
    full = fx.longbench_prompt(long_item)
    assert len(full.encode()) > max_len
    got = load_longbench_v2(path, max_prompt_bytes=max_len)[2].prompt
    want = fx.longbench_prompt(long_item, max_len)
    assert len(want.encode()) == max_len
    assert got == want
    # untouched when the prompt just fits
    fits = len(full.encode())
    assert load_longbench_v2(path, max_prompt_bytes=fits)[2].prompt == full


def test_longbench_v2_placeholders_replace_in_pred_py_order(tmp_path: Path):
    """pred.py chains str.replace: a context holding ``$Q$`` gets the question substituted, a
    choice holding ``$Q$`` keeps it (``$Q$`` was replaced before the choices went in)."""
    item = dict(fx.longbench_items()[0], context="see $Q$ here", choice_B="literal $Q$")
    path = tmp_path / "data.json"
    fx.write_longbench_json(path, [item])
    assert load_longbench_v2(path)[0].prompt == fx.longbench_prompt(item)


def _run_cli(tmp_path: Path, workload: str, src: Path, *extra: str) -> dict[int, int]:
    """``studio dsa run`` with one decode step: request id -> the decode step's position, which
    is the prompt's length in the tiny model's byte tokens."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "studio_backend.cli", "dsa", "run", "--workload", workload]
    cmd += ["--input", str(src), "--out", str(out), "--max-new-tokens", "1", "--layers", "1"]
    cmd += ["--workspace", str(tmp_path / "ws"), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(x) for x in (out / "trace_steps.jsonl").read_text().splitlines()]
    assert {r["dataset"] for r in records} == {workload}
    return {r["request_id"]: r["step_idx"] for r in records}


def test_cli_ruler_prompt_lengths(tmp_path: Path):
    src = tmp_path / "validation.jsonl"
    cases = fx.ruler_cases()
    fx.write_ruler(src, [line for line, _ in cases])
    got = _run_cli(tmp_path, "ruler", src, "--limit", "2")
    assert got == {i: len(p.encode()) for i, (_, p) in enumerate(cases[:2])}


def test_cli_longbench_v2_prompt_lengths_and_middle_cut(tmp_path: Path):
    src = tmp_path / "data.json"
    items = fx.longbench_items()
    fx.write_longbench_json(src, items)
    got = _run_cli(tmp_path, "longbenchv2", src, "--limit", "3", "--max-prompt-tokens", "350")
    assert got == {i: min(len(fx.longbench_prompt(it).encode()), 350) for i, it in enumerate(items)}
