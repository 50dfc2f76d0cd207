"""The Sparse attention page on a real (indexer-produced) trace, headless through AppTest."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from studio_backend.dsa.indexer import TinyConfig
from studio_backend.dsa.ingest import ingest_path
from studio_backend.dsa.run import run_requests
from studio_backend.dsa.tracer import TraceConfig
from studio_backend.dsa.workloads.sharegpt import load_sharegpt
from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT

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
    at = AppTest.from_file(
        str(ROOT / "app_pages" / "sparse_attention.py"), default_timeout=120
    ).run()
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


def test_page_names_the_optional_fields_a_trace_lacks(workspace_dir: Path, tmp_path: Path) -> None:
    """A trace with only seed 004's key fields: all records shown, and a caption saying which
    optional fields they lack."""
    import json

    from studio_backend.dsa.synthetic import generate_trace

    generate_trace(tmp_path / "t", requests=2, steps=3, layers=2, topk=16, prompt_len=80,
                   shared_prefix=16, kv_block_size=8, seed=1)  # fmt: skip
    lines = (tmp_path / "t" / "trace_steps.jsonl").read_text().splitlines()
    keys_only = tmp_path / "k" / "trace_steps.jsonl"
    keys_only.parent.mkdir()
    drop = ("run_name", "dataset", "rank", "world_size")
    keys_only.write_text("".join(
        json.dumps({k: v for k, v in json.loads(x).items() if k not in drop}) + "\n" for x in lines
    ))  # fmt: skip
    ws = open_workspace(workspace_dir)
    ingest_path(ws, keys_only)
    ws.close()
    at = AppTest.from_file(
        str(ROOT / "app_pages" / "sparse_attention.py"), default_timeout=120
    ).run()
    assert not at.exception, at.exception
    n = len(lines)
    assert {m.label: m.value for m in at.metric}["Records"] == f"{n:,}"
    assert any(
        c.value == "Optional fields absent (seed 004's key fields are all a record needs): "
        f"run_name in {n} of {n} records, dataset in {n} of {n} records, rank in {n} of {n}"
        f" records, world_size in {n} of {n} records"
        for c in at.caption
    ), [c.value for c in at.caption]
