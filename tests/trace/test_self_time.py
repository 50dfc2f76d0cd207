"""Self time against torch.profiler itself: a real CPU profile of a small model, exported as a
Chrome trace and ingested, gives key_averages()'s keys, counts, self and total CPU times."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from studio_backend.trace import analysis
from studio_backend.trace.ingest import ingest_profile
from studio_backend.trace.module_tracer import ModuleTracer
from tests.trace.tiny import TinyDecoder


@pytest.fixture(scope="module")
def real_profile(tmp_path_factory):
    """(trace path, {key: (count, self_us, total_us)} from key_averages) of 2 forwards of the
    tiny decoder with every module annotated, Python stacks on, inside a record_function."""
    torch.manual_seed(0)
    model = TinyDecoder(2)
    ids = torch.arange(7).unsqueeze(0)
    tracer = ModuleTracer(model, annotate=True)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True, with_stack=True) as prof:
        with tracer, torch.no_grad(), record_function("generate"):
            for _ in range(2):
                model(ids)
    path = tmp_path_factory.mktemp("selftime") / "tiny.pt.trace.json"
    prof.export_chrome_trace(str(path))
    # A Python frame whose name is not printable (seen: the profiler's own CUPTI monitor,
    # "torch/profiler/_cupti_monitor.py(0): \x02") is exported as "unknown": left out.
    ka = {
        e.key: (e.count, e.self_cpu_time_total, e.cpu_time_total)
        for e in prof.key_averages()
        if e.key.isprintable()
    }
    return path, ka


def test_self_and_total_equal_key_averages(workspace, real_profile) -> None:
    path, ka = real_profile
    pid = ingest_profile(workspace, path)
    top = analysis.top(workspace, pid, kind="cpu", n=None)
    got = {
        r.name: (r.calls, r.self_us, r.total_us) for r in top.itertuples() if r.name != "unknown"
    }
    # ops, module annotations, "generate" and (with_stack) the Python frames
    assert set(got) == set(ka) and len(ka) > 100
    assert {k: v[0] for k, v in got.items()} == {k: v[0] for k, v in ka.items()}
    for key, (_, self_us, total_us) in ka.items():
        # the trace holds integer nanoseconds; torch sums the same as float microseconds
        assert got[key][1] == pytest.approx(self_us, abs=1e-6), key
        assert got[key][2] == pytest.approx(total_us, abs=1e-6), key
    assert any(got[k][1] < got[k][2] for k in got if k == "aten::linear")
    # ranked by self time by default, by total on request
    assert top["self_us"].tolist() == sorted(top["self_us"], reverse=True)
    by_total = analysis.top(workspace, pid, kind="cpu", n=None, by="total")
    assert by_total["total_us"].tolist() == sorted(by_total["total_us"], reverse=True)
    assert top["share"].sum() == pytest.approx(1.0)
    # cpu_op only: the same numbers for the aten ops
    ops = analysis.top(workspace, pid, kind="cpu_op", n=None)
    assert {r.name: r.self_us for r in ops.itertuples()} == pytest.approx(
        {k: v[1] for k, v in ka.items() if k.startswith("aten::")}, abs=1e-6
    )


def test_profiles_ingested_before_self_times_get_them_computed(workspace, real_profile) -> None:
    path, _ = real_profile
    pid = ingest_profile(workspace, path)
    stored = analysis.top(workspace, pid, kind="cpu", n=None)
    with workspace.transaction() as cur:
        cur.execute("DELETE FROM profile_self_time WHERE profile_id = ?", [pid])
    again = analysis.top(workspace, pid, kind="cpu", n=None)
    pd_equal = stored.reset_index(drop=True).equals(again.reset_index(drop=True))
    assert pd_equal


def test_families_count_nested_ops_once(workspace, real_profile) -> None:
    """Time by family sums self times: the family total of cpu ops is their self-time total,
    at most the time of the top-level ops (inclusive sums would count aten::mm in aten::matmul
    in aten::linear three times)."""
    path, ka = real_profile
    pid = ingest_profile(workspace, path)
    fam = analysis.families(workspace, pid, kind="cpu_op")
    ops_self = sum(v[1] for k, v in ka.items() if k.startswith("aten::"))
    assert fam["total_us"].sum() == pytest.approx(ops_self, abs=1e-3)
    top_level = analysis.attribution(workspace, pid, kind="cpu_op")["dur_us"].sum()
    assert fam["total_us"].sum() <= top_level + 1e-6
    inclusive = (
        workspace.cursor()
        .execute(
            "SELECT sum(dur_ns) / 1e3 FROM profile_events WHERE profile_id = ? AND cat = 'cpu_op'",
            [pid],
        )
        .fetchone()[0]
    )
    assert inclusive > top_level  # the double counting the families no longer do
