"""torch_npu and nsys readers from hand-built files in their documented structures; the diff of
two profiles; clear errors for malformed input."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from studio_backend.errors import InputError
from studio_backend.trace import analysis
from studio_backend.trace.diff import diff
from studio_backend.trace.ingest import detect_format, ingest_profile
from tests.trace.fixtures import (
    NPU_EXPECTED_MODULES,
    NPU_KERNELS,
    NSYS_EXPECTED,
    NSYS_KERNELS,
    write_kineto_gpu,
    write_nsys,
    write_torch_npu,
)


def _placed(ws, pid) -> dict:
    attr = analysis.attribution(ws, pid)
    return {
        r.name: (None if r.module == "unattributed" else r.module,
                 None if pd.isna(r.layer) else int(r.layer))
        for r in attr.itertuples()
    }  # fmt: skip


def test_torch_npu_kernels_totals_and_attribution(workspace, tmp_path) -> None:
    root = write_torch_npu(tmp_path)
    assert detect_format(root) == "torch_npu"
    pid = ingest_profile(workspace, root)
    top = analysis.top(workspace, pid, n=None)
    expected = {n: round(float(d) * 1000) / 1e3 for n, _, _, _, d, _ in NPU_KERNELS}
    assert dict(zip(top["name"], top["total_us"], strict=True)) == pytest.approx(expected)
    assert list(top["calls"]) == [1, 1, 1, 1]  # trace_view's device rows are not counted twice
    assert _placed(workspace, pid) == NPU_EXPECTED_MODULES
    ops = analysis.attribution(workspace, pid).set_index("name")["op_name"]
    assert ops["aclnnMatmul_MatMulV3"] == "aten::linear"
    fams = analysis.families(workspace, pid).set_index("family")["calls"].to_dict()
    assert fams == {"gemm": 1, "norm": 1, "attention": 1, "communication": 1}
    shapes = (
        workspace.cursor()
        .execute(
            "SELECT input_dims FROM profile_events WHERE profile_id = ? AND name = ?",
            [pid, "aclnnMatmul_MatMulV3"],
        )
        .fetchone()[0]
    )
    assert shapes == "1,7,2048;2048,6144"


def test_torch_npu_errors(workspace, tmp_path) -> None:
    with pytest.raises(InputError, match="no ASCEND_PROFILER_OUTPUT"):
        ingest_profile(workspace, tmp_path)
    root = write_torch_npu(tmp_path / "a")
    csv = next(root.glob("ASCEND_PROFILER_OUTPUT/kernel_details.csv"))
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0].replace("Duration(us)", "Dur")] + lines[1:]))
    with pytest.raises(InputError, match=r"missing column\(s\) Duration\(us\)") as info:
        ingest_profile(workspace, root)
    assert "kernel_details.csv" in str(info.value)
    csv.write_text("\n".join([lines[0], lines[1].replace("21.32", "n/a")]))
    with pytest.raises(InputError, match=r"line 2: Duration\(us\) is not a number"):
        ingest_profile(workspace, root)
    csv.write_text("\n".join([lines[0], lines[1][:40]]))
    with pytest.raises(InputError, match="line 2: wrong number of fields"):
        ingest_profile(workspace, root)
    assert workspace.table_counts()["profile_events"] == 0


def test_nsys_kernels_join_runtime_and_nvtx(workspace, tmp_path) -> None:
    path = write_nsys(tmp_path / "report.sqlite")
    assert detect_format(path) == "nsys"
    pid = ingest_profile(workspace, path)
    top = analysis.top(workspace, pid, n=None)
    expected = {n: (e - s) / 1e3 for n, s, e, _ in NSYS_KERNELS}
    assert dict(zip(top["name"], top["total_us"], strict=True)) == pytest.approx(expected)
    assert _placed(workspace, pid) == NSYS_EXPECTED
    assert analysis.unattributed(workspace, pid).empty


def test_nsys_errors(workspace, tmp_path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite at all" * 10)
    with pytest.raises(InputError, match="not an SQLite database") as info:
        ingest_profile(workspace, junk)
    assert str(junk) in str(info.value)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).execute(
        "CREATE TABLE StringIds (id INTEGER, value TEXT)"
    ).connection.close()
    with pytest.raises(InputError, match="no CUPTI_ACTIVITY_KIND_KERNEL table.*StringIds"):
        ingest_profile(workspace, empty)
    assert workspace.table_counts()["profiles"] == 0


def test_diff_of_two_profiles(workspace, tmp_path) -> None:
    a = ingest_profile(workspace, write_kineto_gpu(tmp_path / "a.json"), name="before")
    b = ingest_profile(workspace, write_nsys(tmp_path / "b.sqlite"), name="after")
    d = diff(workspace, a, b).set_index("key")
    assert d.loc["paged_attention_v2_kernel", "calls_a"] == 2  # once attributed, once in a graph
    assert d.loc["paged_attention_v2_kernel", "total_us_a"] == pytest.approx(70.0)
    assert d.loc["paged_attention_v2_kernel", "total_us_b"] == pytest.approx(40.0)
    assert d.loc["paged_attention_v2_kernel", "delta_us"] == pytest.approx(-30.0)
    assert d.loc["rms_norm_kernel", "calls_a"] == 0  # new in b
    assert pd.isna(d.loc["rms_norm_kernel", "ratio"])
    assert d.loc["silu_and_mul_kernel", "total_us_b"] == 0
    assert list(d["delta_us"].abs()) == sorted(d["delta_us"].abs(), reverse=True)
    fam = diff(workspace, a, b, by="family").set_index("key")
    assert fam.loc["attention", "total_us_a"] == pytest.approx(76.0)
    assert fam.loc["attention", "total_us_b"] == pytest.approx(40.0)
    mod = diff(workspace, a, b, by="module").set_index("key")
    assert mod.loc["unattributed", "total_us_b"] == 0
    assert mod.loc["model.layers.0.self_attn.attn", "total_us_a"] == pytest.approx(46.0)
    with pytest.raises(InputError, match="no such profile"):
        diff(workspace, a, "p-missing")
