"""Results in the workspace: JSON export/import round trip, duplicates and bad files refused."""

from __future__ import annotations

import json

import pytest

from studio_backend.bench.results import (
    export_run,
    import_result,
    kernel_results,
    list_runs,
    save_result,
    serve_results,
    write_json,
)
from studio_backend.errors import InputError
from studio_backend.workspace import open_workspace


def _doc() -> dict:
    rows = [
        {"preset": "tiny", "routing": "uniform", "batch": b, "impl": impl, "median_us": t,
         "gbps": 1.5 * b, "speedup": s, "dtype": "bfloat16"}
        for b in (1, 2) for impl, t, s in (("reference", 100.0 * b, 1.0), ("fused-triton", 25.0 * b, 4.0))
    ]  # fmt: skip
    return {
        "run": {
            "run_id": "abc123", "kind": "kernels", "name": "h100 sweep", "device": "cuda",
            "device_name": "NVIDIA H100 80GB HBM3", "versions": {"torch": "2.13"},
            "config": {"batches": [1, 2]}, "created_at": "2026-11-20T10:00:00+00:00",
            "source": "measured", "copy_gbps": 3000.0, "datasheet_gbps": 3350.0, "notes": "",
        },
        "kernel_results": rows,
        "serve_results": [],
    }  # fmt: skip


def test_round_trip_between_workspaces(tmp_path) -> None:
    a = open_workspace(tmp_path / "a")
    save_result(a, _doc())
    exported = export_run(a, "abc123")
    path = tmp_path / "run.json"
    write_json({k: v for k, v in exported.items() if k != "format"}, path)
    a.close()

    b = open_workspace(tmp_path / "b")
    assert import_result(b, path) == "abc123"
    runs = list_runs(b)
    assert runs["source"].tolist() == ["imported"] and runs["device_name"][0].startswith("NVIDIA")
    assert str(runs["created_at"][0]) == "2026-11-20 10:00:00"
    rows = kernel_results(b)
    assert len(rows) == 4
    assert rows.set_index(["batch", "impl"])["median_us"].to_dict() == {
        (1, "fused-triton"): 25.0, (1, "reference"): 100.0,
        (2, "fused-triton"): 50.0, (2, "reference"): 200.0,
    }  # fmt: skip
    # importing twice is refused and duplicates nothing
    with pytest.raises(InputError, match="already in the workspace"):
        import_result(b, path)
    assert len(kernel_results(b)) == 4
    assert serve_results(b).empty
    b.close()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not JSON"),
        ('{"format": "other"}', "not a studio benchmark export"),
        (json.dumps({"format": "studio-bench/1", "run": {"run_id": "x"}}), "run has no 'kind'"),
    ],
)
def test_bad_files_name_the_file(tmp_path, content, problem) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    ws = open_workspace(tmp_path / "ws")
    with pytest.raises(InputError, match=problem) as info:
        import_result(ws, path)
    assert str(path) in str(info.value)
    assert list_runs(ws).empty
    ws.close()


def test_unknown_field_refused(tmp_path) -> None:
    doc = _doc()
    doc["kernel_results"][0]["bogus"] = 1
    path = tmp_path / "x.json"
    write_json(doc, path)
    ws = open_workspace(tmp_path / "ws")
    with pytest.raises(InputError, match="unknown fields"):
        import_result(ws, path)
    ws.close()
