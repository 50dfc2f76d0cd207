"""The Sparse attention page on a real (indexer-produced) trace, headless through AppTest."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from backend.dsa.indexer import TinyConfig
from backend.dsa.ingest import ingest_path
from backend.dsa.run import run_requests
from backend.dsa.tracer import TraceConfig
from backend.dsa.workloads.sharegpt import load_sharegpt
from backend.workspace import open_workspace
from studio.navigation import ROOT

ASSETS = ROOT / "assets" / "dsa"


def test_page_with_trace_and_prefix_trace(workspace_dir: Path, tmp_path: Path) -> None:
    reqs = load_sharegpt(ASSETS / "sharegpt_sample.json", "per_user_turn", limit=3)
    out = tmp_path / "sg"
    run_requests(reqs, out, dataset="sharegpt", trace_cfg=TraceConfig(out_dir=str(out)),
                 max_new_tokens=3, model_cfg=TinyConfig(layers=3, index_topk=32))  # fmt: skip
    ws = open_workspace(workspace_dir)
    res = ingest_path(ws, out / "trace_steps.jsonl")
    ingest_path(ws, ASSETS / "mooncake_sample.jsonl")
    ws.close()
    at = AppTest.from_file(str(ROOT / "pages" / "sparse_attention.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Records"] == f"{res.rows:,}" and metrics["Requests"] == "3"
    assert metrics["Layers"] == "3" and metrics["Bad lines"] == "0"
    assert metrics["Prefix hits"] == "2"  # requests 1 and 2 share the system prompt
    assert metrics["Distinct blocks"] == "100"  # mooncake sample: 4 shared + 96 new hash blocks
    # a narrower layer range re-runs every aggregate without errors
    at.slider[0].set_value((1, 2)).run()
    assert not at.exception and not at.error
