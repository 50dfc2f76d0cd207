"""End-to-end: the Sparse attention page in Chromium on a ShareGPT trace produced by the
reference engine (Qwen3-MoE) with the DSA hook: a lightning indexer per layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_backend.dsa import analysis
from studio_backend.dsa.ingest import ingest_path
from studio_backend.dsa.run import run_engine_requests
from studio_backend.dsa.tracer import TraceConfig
from studio_backend.dsa.workloads.sharegpt import load_sharegpt
from studio_backend.models.create import create_model
from studio_backend.workspace import open_workspace
from tests.e2e.conftest import wait_for_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "dsa"


def test_sparse_attention_hot_spots(studio_factory, page, tmp_path: Path) -> None:
    reqs = load_sharegpt(ASSETS / "sharegpt_sample.json", "per_user_turn", limit=6)
    model = create_model(tmp_path / "qwen3-moe-tiny", preset="tiny", layers=6, seed=0)
    out = tmp_path / "sharegpt_trace"
    cfg = TraceConfig(out_dir=str(out), kv_block_size_tokens=8, prefix_cache_key_tokens=64)
    run_engine_requests(reqs, out, model, dataset="sharegpt", trace_cfg=cfg, index_topk=32,
                        max_new_tokens=16, batch_size=2)  # fmt: skip
    ws_dir = tmp_path / "e2e-workspace"
    ws = open_workspace(ws_dir)
    res = ingest_path(ws, out / "trace_steps.jsonl")
    hot = analysis.prefix_hot_blocks(ws, res.trace_id, 1)
    reqs_df = analysis.requests(ws, res.trace_id)
    ws.close()
    # request 1 is the second turn of request 0's conversation: a prefix-cache hit
    assert reqs_df.prefix_hit.tolist()[:2] == [False, True] and hot["1"]
    assert reqs_df.layers.tolist() == [6] * 6

    server = studio_factory(ws_dir)
    page.goto(f"{server.url}/sparse_attention")
    wait_for_app(page)
    page.get_by_text("Hot spots · request 0").wait_for()
    body = page.inner_text("body")
    assert f"{res.rows:,}" in body and "Bad lines" in body
    # switch to request 1 (a prefix-cache hit): the prefix line and hot prefix blocks show
    page.locator("[data-testid='stSelectbox']").nth(1).click()  # 0: Trace, 1: Request
    page.keyboard.type("1")
    page.keyboard.press("Enter")
    wait_for_app(page)
    page.get_by_text("Hot spots · request 1").wait_for()
    page.get_by_text("prefix-cached blocks <").first.wait_for()
    page.get_by_role("tab", name="Prefix hot blocks").click()
    page.get_by_text("hot prefix blocks · request 1").wait_for()
    page.wait_for_timeout(1500)
    shot = tmp_path / "sparse_attention.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
