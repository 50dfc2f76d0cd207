"""Kineto ingest: totals equal a direct aggregation of the trace; CPU attribution against a
brute-force oracle; a hand-built GPU trace attributes kernels exactly (graph replay included)."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter, defaultdict

import pandas as pd
import pytest

from studio_backend.errors import InputError
from studio_backend.trace import analysis
from studio_backend.trace.families import classify
from studio_backend.trace.ingest import ingest_profile
from studio_backend.trace.module_tracer import layer_of
from tests.trace.fixtures import GPU_EXPECTED, GRAPH_KERNELS, ORPHAN, write_kineto_gpu


def _direct(path) -> tuple[Counter, dict]:
    """Count and integer-ns total per (cat, name) of 'X' events, straight from json.load."""
    events = json.load(open(path))["traceEvents"]
    calls: Counter = Counter()
    total: dict = defaultdict(int)
    for e in events:
        if e.get("ph") == "X":
            calls[(e.get("cat"), e["name"])] += 1
            total[(e.get("cat"), e["name"])] += round(float(e["dur"]) * 1000)
    return calls, total


def test_totals_equal_direct_aggregation(workspace, cpu_trace) -> None:
    path, _ = cpu_trace
    pid = ingest_profile(workspace, path)
    rows = (
        workspace.cursor()
        .execute(
            "SELECT cat, name, count(*), sum(dur_ns) FROM profile_events "
            "WHERE profile_id = ? AND ph = 'X' GROUP BY ALL",
            [pid],
        )
        .fetchall()
    )
    calls, total = _direct(path)
    assert {(c, n): k for c, n, k, _ in rows} == dict(calls)
    assert {(c, n): int(t) for c, n, _, t in rows} == dict(total)
    # the top table is the cpu_op slice of the same aggregation, except that (as in torch's
    # key_averages, tests/trace/test_self_time.py) a call that is the only child of a call of
    # the same name is merged into it (aten::div_ -> aten::div_)
    top = analysis.top(workspace, pid, n=None)
    ops = {n: (calls[("cpu_op", n)], total[("cpu_op", n)] / 1e3) for c, n in calls if c == "cpu_op"}
    got = {r.name: (r.calls, r.total_us) for r in top.itertuples()}
    nested = _self_nested(path)
    assert set(got) == set(ops) and "aten::div_" in nested
    assert {k: v for k, v in got.items() if k not in nested} == pytest.approx(
        {k: v for k, v in ops.items() if k not in nested}
    )
    assert all(got[k][0] <= ops[k][0] and got[k][1] <= ops[k][1] for k in nested)
    assert any(got[k][0] < ops[k][0] for k in nested)
    assert top["share"].sum() == pytest.approx(1.0)
    info = analysis.profile_info(workspace, pid)
    assert info["format"] == "kineto" and not info["has_device"]
    assert info["n_events"] == sum(
        1 for e in json.load(open(path))["traceEvents"] if e["ph"] in "Xsf"
    )


def _self_nested(path) -> set[str]:
    """Names of cpu ops with a call inside another call of the same name (same thread)."""
    ops = [e for e in json.load(open(path))["traceEvents"] if e.get("cat") == "cpu_op"]
    return {
        b["name"] for a in ops for b in ops
        if a is not b and a["name"] == b["name"] and a["tid"] == b["tid"]
        and a["ts"] <= b["ts"] and b["ts"] + b["dur"] <= a["ts"] + a["dur"]
    }  # fmt: skip


def test_gzip_trace_ingests_the_same(workspace, cpu_trace, tmp_path) -> None:
    path, _ = cpu_trace
    gz = tmp_path / "tiny.json.gz"
    with open(path, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    a = analysis.top(workspace, ingest_profile(workspace, path), n=None)
    b = analysis.top(workspace, ingest_profile(workspace, gz), n=None)
    assert a.equals(b)


def _oracle_modules(path) -> dict[int, str | None]:
    """Brute force: for each top-level cpu_op (in file order among kept events), the shortest
    user_annotation on its thread that contains its start."""
    events = [e for e in json.load(open(path))["traceEvents"] if e.get("ph") in ("X", "s", "f")]
    ops = [(i, e) for i, e in enumerate(events) if e.get("cat") == "cpu_op"]
    anns = [e for e in events if e.get("cat") == "user_annotation"]

    def inside(a, e) -> bool:
        return (a["tid"] == e["tid"] and a["ts"] <= e["ts"]
                and e["ts"] + e["dur"] <= a["ts"] + a["dur"] + 1e-3)  # fmt: skip

    out = {}
    for i, e in ops:
        if any(inside(o, e) and o is not e and o["dur"] >= e["dur"] for _, o in ops):
            continue  # nested in another op
        around = [a for a in anns if inside(a, e)]
        out[i] = min(around, key=lambda a: a["dur"])["name"] if around else None
    return out


def test_cpu_ops_attribute_to_modules_and_layers(workspace, cpu_trace) -> None:
    path, tracer = cpu_trace
    pid = ingest_profile(workspace, path)
    attr = analysis.attribution(workspace, pid)
    oracle = _oracle_modules(path)
    got = {
        r.event_id: (None if r.module == "unattributed" else r.module) for r in attr.itertuples()
    }
    assert got == oracle
    # every Linear module call ran exactly one top-level aten::linear, attributed to it
    linears = attr[attr["name"] == "aten::linear"]
    expected = sorted(c.module for c in tracer.calls if c.module_class == "Linear")
    assert sorted(linears["module"]) == expected
    assert [layer_of(m) for m in linears["module"]] == [
        None if pd.isna(x) else int(x) for x in linears["layer"]
    ]
    per_layer = analysis.per_layer(workspace, pid)
    layers = set(per_layer["layer"].dropna().astype(int))
    assert layers == {0, 1}
    # the per-layer table partitions the attributed time exactly
    assert per_layer["total_us"].sum() == pytest.approx(attr["dur_us"].sum())


def test_gpu_kernels_attribute_through_correlation(workspace, tmp_path) -> None:
    path = write_kineto_gpu(tmp_path / "gpu.json")
    pid = ingest_profile(workspace, path)
    assert analysis.profile_info(workspace, pid)["has_device"]
    attr = analysis.attribution(workspace, pid)
    placed = attr[attr["module"] != "unattributed"]
    got = [(r.name, r.op_name, r.module, int(r.layer), r.dur_us) for r in placed.itertuples()]
    assert got == GPU_EXPECTED
    lost = attr[attr["module"] == "unattributed"]
    assert sorted(lost["name"]) == sorted([k for k, _ in GRAPH_KERNELS] + [ORPHAN[0]])
    reasons = analysis.unattributed(workspace, pid)
    assert dict(zip(reasons["reason"], reasons["calls"], strict=True)) == {
        "CUDA graph replay (3 kernels share correlation 508)": 3,
        "no launch event (correlation 999)": 1,
    }
    graph_us = sum(d for _, d in GRAPH_KERNELS)
    assert dict(zip(reasons["reason"], reasons["total_us"], strict=True))[
        "CUDA graph replay (3 kernels share correlation 508)"
    ] == pytest.approx(graph_us)
    # the module table has the explicit bucket and sums to all kernel time
    mods = analysis.by_module(workspace, pid)
    assert mods.set_index("module").loc["unattributed", "total_us"] == pytest.approx(
        graph_us + ORPHAN[1]
    )
    all_us = sum(d for *_, d in GPU_EXPECTED) + graph_us + ORPHAN[1]
    assert mods["total_us"].sum() == pytest.approx(all_us)
    # per-layer time: layer 0 = gemm + rotary + attention, layer 1 = norm + act + comm
    pl = analysis.per_layer(workspace, pid)
    by = {
        (None if pd.isna(r.layer) else int(r.layer), r.family): r.total_us for r in pl.itertuples()
    }
    assert by == pytest.approx({
        (0, "gemm"): 12.5, (0, "rotary"): 3.25, (0, "attention"): 46.0, (1, "norm"): 4.5,
        (1, "activation"): 2.75, (1, "communication"): 9.0, (None, "gemm"): 11.0,
        (None, "attention"): 30.0, (None, "norm"): 4.0, (None, "other"): 1.5,
    })  # fmt: skip


def test_families_match_python_classifier(workspace, tmp_path) -> None:
    path = write_kineto_gpu(tmp_path / "gpu.json")
    pid = ingest_profile(workspace, path)
    fam = analysis.families(workspace, pid)
    expected: dict = defaultdict(float)
    for name, *_, dur in GPU_EXPECTED:
        expected[classify(name)] += dur
    for name, dur in [*GRAPH_KERNELS, ORPHAN]:
        expected[classify(name)] += dur
    assert dict(zip(fam["family"], fam["total_us"], strict=True)) == pytest.approx(dict(expected))
    assert classify("paged_attention_v2_kernel") == "attention"
    assert classify("fused_moe_kernel_gptq_awq") == "moe"
    assert classify("ncclDevKernel_AllReduce_Sum_bf16_RING_LL") == "communication"


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_trace_is_refused_and_nothing_stored(workspace, cpu_trace, tmp_path, cut) -> None:
    path, _ = cpu_trace
    data = path.read_bytes()
    bad = tmp_path / "cut.json"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(InputError) as info:
        ingest_profile(workspace, bad)
    assert str(bad) in str(info.value) and "truncated or malformed" in str(info.value)
    assert workspace.table_counts()["profile_events"] == 0
    assert workspace.table_counts()["profiles"] == 0


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b'{"schemaVersion": 1}', "no 'traceEvents' list"), (b"hello", "not a Chrome trace"),
     (b'{"traceEvents": [{"ph": "X", "name": "a"}]}', "has no 'ts' or 'name'"),
     (b'{"traceEvents": [1, 2]}', "is not a JSON object")],
)  # fmt: skip
def test_malformed_traces_name_the_problem(workspace, tmp_path, content, problem) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    with pytest.raises(InputError, match=problem):
        ingest_profile(workspace, bad)
    assert workspace.table_counts()["profiles"] == 0


def test_many_small_commits_give_the_same_profile_and_fail_cleanly(
    workspace, cpu_trace, tmp_path, monkeypatch
) -> None:
    import studio_backend.trace.ingest as ingest_mod

    path, _ = cpu_trace
    whole = analysis.top(workspace, ingest_profile(workspace, path), n=None)
    monkeypatch.setattr(ingest_mod, "EVENT_BATCH", 37)
    monkeypatch.setattr(ingest_mod, "BATCHES_PER_COMMIT", 2)
    pid = ingest_profile(workspace, path)
    assert analysis.top(workspace, pid, n=None).equals(whole)
    before = workspace.table_counts()
    bad = tmp_path / "cut.json"
    bad.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 3 // 4])
    with pytest.raises(InputError):
        ingest_profile(workspace, bad)  # fails after several committed chunks
    after = workspace.table_counts()
    for table in ("profiles", "profile_events", "profile_attribution"):
        assert after[table] == before[table]
