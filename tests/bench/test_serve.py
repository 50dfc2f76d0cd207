"""`studio bench serve` against a stdlib OpenAI-compatible stand-in with exact token counts."""

from __future__ import annotations

import pytest

from studio_backend.bench.serve import ServeBenchConfig, run_serve_bench
from studio_backend.errors import InputError, StudioError
from tests.bench.standin import StandIn


def test_serve_counts_tokens_and_concurrency() -> None:
    with StandIn(token_s=0.002) as srv:
        result = run_serve_bench(
            ServeBenchConfig(url=srv.url, batches=[1, 2, 4], input_tokens=3, output_tokens=50)
        )
    rows = result["serve_results"]
    assert [r["batch"] for r in rows] == [1, 2, 4]
    assert [r["output_tokens"] for r in rows] == [50, 100, 200]
    assert [r["requests"] for r in rows] == [1, 2, 4]
    # warm-up (2 tokens) + 1 + 2 + 4 measured requests, each 3 prompt token ids, ignore_eos
    assert [p["max_tokens"] for p in srv.payloads] == [2] + [50] * 7
    assert all(p["prompt"] == [1, 1, 1] and p["ignore_eos"] for p in srv.payloads)
    assert all(p["model"] == "standin-model" for p in srv.payloads)
    # the 4 requests of batch 4 (sleeping 0.1 s each) were all in flight together
    assert max(srv.peaks[-4:]) == 4
    for r in rows:
        assert r["tokens_per_s"] == pytest.approx(r["output_tokens"] / r["wall_s"])
        # wall time >= one request's decode time (50 tokens x 2 ms), far below serial time
        assert 0.1 <= r["wall_s"] < 0.1 * r["batch"] + 0.5
    run = result["run"]
    assert run["kind"] == "serve" and run["config"]["model"] == "standin-model"


def test_serve_bad_url_and_unreachable() -> None:
    with pytest.raises(InputError):
        run_serve_bench(ServeBenchConfig(url="ftp://x", batches=[1]))
    with StandIn() as srv:
        url = srv.url
    with pytest.raises(StudioError, match="cannot reach"):
        run_serve_bench(ServeBenchConfig(url=url, batches=[1], output_tokens=1))
