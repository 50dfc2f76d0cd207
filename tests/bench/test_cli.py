"""`studio bench` commands end to end (tiny preset on CPU, a stand-in server)."""

from __future__ import annotations

import json

from studio_backend.bench.results import kernel_results, list_runs, serve_results
from studio_backend.cli import main
from studio_backend.workspace import open_workspace
from tests.bench.standin import StandIn


def test_kernels_export_import(tmp_path, capsys) -> None:
    ws_a, ws_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "run.json"
    rc = main(["--workspace", str(ws_a), "bench", "kernels", "--preset", "tiny", "--batch", "1,2",
               "--reps", "2", "--rotations", "1", "--device", "cpu", "--json-out", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "fused-torch-cpu" in printed and "stored run" in printed
    doc = json.loads(out.read_text())
    assert doc["format"] == "studio-bench/1" and len(doc["kernel_results"]) == 4
    assert main(["--workspace", str(ws_b), "bench", "import", str(out)]) == 0
    b = open_workspace(ws_b)
    assert len(kernel_results(b)) == 4 and list_runs(b)["source"].tolist() == ["imported"]
    b.close()
    # export from the measuring workspace gives the same rows back
    a = open_workspace(ws_a)
    run_id = list_runs(a)["run_id"][0]
    a.close()
    again = tmp_path / "again.json"
    assert main(["--workspace", str(ws_a), "bench", "export", run_id, "--out", str(again)]) == 0
    exported = json.loads(again.read_text())
    assert [r["median_us"] for r in exported["kernel_results"]] == [
        r["median_us"] for r in doc["kernel_results"]
    ]


def test_import_bad_file_exits_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert main(["--workspace", str(tmp_path / "w"), "bench", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err
    assert (
        main(["--workspace", str(tmp_path / "w"), "bench", "import", str(tmp_path / "nope")]) == 2
    )


def test_serve_command(tmp_path) -> None:
    with StandIn(token_s=0.0005) as srv:
        rc = main(["--workspace", str(tmp_path / "w"), "bench", "serve", "--url", srv.url,
                   "--batch", "1,2", "--input-tokens", "1", "--output-tokens", "16"])  # fmt: skip
    assert rc == 0
    ws = open_workspace(tmp_path / "w")
    rows = serve_results(ws)
    assert rows["output_tokens"].tolist() == [16, 32] and rows["batch"].tolist() == [1, 2]
    ws.close()
