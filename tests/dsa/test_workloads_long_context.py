"""RULER and LongBench v2 workloads on fixtures written from the projects' published formats
(tests/dsa/fixtures: RULER's prepare.py JSONL lines, LongBench v2's data.json list)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio_backend.cli import main
from studio_backend.dsa.workloads import truncate_middle
from studio_backend.dsa.workloads.longbench import load_longbench_v2
from studio_backend.dsa.workloads.ruler import load_ruler
from studio_backend.errors import InputError

FIX = Path(__file__).resolve().parent / "fixtures"
RULER = FIX / "ruler_niah_single_1_validation.jsonl"
LB2 = FIX / "longbench_v2_data.json"


def test_ruler_prompt_is_input_plus_answer_prefix() -> None:
    lines = [json.loads(x) for x in RULER.read_text().splitlines()]
    reqs = load_ruler(RULER)
    assert [r.request_id for r in reqs] == [0, 1, 2, 3]
    assert [r.conversation for r in reqs] == ["ruler-0", "ruler-1", "ruler-2", "ruler-3"]
    assert reqs[0].prompt == lines[0]["input"] + lines[0]["answer_prefix"]
    assert reqs[0].prompt.endswith(
        "for jittery-hospital mentioned in the provided text? The special magic number for"
        " jittery-hospital mentioned in the provided text is"
    )
    assert reqs[3].prompt == lines[3]["input"]  # an older release: no answer_prefix
    assert [r.conversation for r in load_ruler(RULER, limit=2)] == ["ruler-0", "ruler-1"]


def test_middle_truncation_keeps_both_ends() -> None:
    full = load_ruler(RULER)[0].prompt.encode()
    cut = load_ruler(RULER, max_prompt_bytes=101)[0].prompt.encode()
    assert cut == full[:50] + full[-51:] and len(cut) == 101
    assert truncate_middle("ab€cd", 5) == "abcd"  # the split 3-byte character is dropped
    assert truncate_middle("short", 0) == "short"


def test_longbench_v2_zero_shot_prompt() -> None:
    reqs = load_longbench_v2(LB2)
    assert [r.conversation for r in reqs] == [
        "66f36490821e116aacb2cc22",
        "66ebed525a08c7b9b35e1cb4",
    ]
    assert reqs[0].prompt == (
        "Please read the following text and answer the question below.\n\n<text>\n"
        "Quarterly report. Q1 revenue was 10. Q2 revenue was 12. Q3 revenue was 19."
        " Q4 revenue was 11.\n</text>\n\n"
        "What is the correct answer to this question: Which quarter had the highest revenue?\n"
        "Choices:\n(A) Q1\n(B) Q2\n(C) Q3\n(D) Q4\n\n"
        'Format your response as follows: "The correct answer is (insert answer here)".'
    )


def test_longbench_v2_jsonl_export_reads_the_same(tmp_path: Path) -> None:
    items = json.loads(LB2.read_text())
    p = tmp_path / "longbench_v2.jsonl"
    p.write_text("".join(json.dumps(i) + "\n" for i in items))
    assert load_longbench_v2(p) == load_longbench_v2(LB2)


def test_long_context_bad_files_name_the_file(tmp_path: Path) -> None:
    items = json.loads(LB2.read_text())
    del items[1]["context"]
    bad = tmp_path / "data.json"
    bad.write_text(json.dumps(items))
    with pytest.raises(
        InputError, match=r"data\.json.*item 1 lacks LongBench v2 field\(s\) context"
    ):
        load_longbench_v2(bad)
    r = tmp_path / "r.jsonl"
    r.write_text('{"index": 0, "outputs": ["1"]}\n')
    with pytest.raises(InputError, match=r"r\.jsonl.*line 1 has no string 'input'"):
        load_ruler(r)
    assert main(["dsa", "run", "--workload", "ruler", "--input", str(bad), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip


@pytest.mark.parametrize("workload,path", [("ruler", RULER), ("longbenchv2", LB2)])
def test_dsa_run_traces_the_file(tmp_path: Path, workload: str, path: Path) -> None:
    """Each request's first decode step sits right after its prompt: the trace ran the prompts
    the loader built (byte tokens), 2 decode steps x 2 layers each."""
    out = tmp_path / "run"
    rc = main(["dsa", "run", "--workload", workload, "--input", str(path), "--out", str(out),
               "--layers", "2", "--index-topk", "16", "--max-new-tokens", "2",
               "--max-prompt-tokens", "600"])  # fmt: skip
    assert rc == 0
    recs = [json.loads(x) for x in (out / "trace_steps.jsonl").read_text().splitlines()]
    loader = load_ruler if workload == "ruler" else load_longbench_v2
    reqs = loader(path, max_prompt_bytes=600)
    assert len(recs) == len(reqs) * 2 * 2
    assert {r["dataset"] for r in recs} == {workload}
    first = {}
    for r in recs:
        first[r["request_id"]] = min(first.get(r["request_id"], 1 << 30), r["step_idx"])
    assert first == {r.request_id: len(r.prompt.encode()) for r in reqs}
