"""The Dumps page's Ray head field: an ingest over the cluster shows the run like a local one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio_backend.dumps import synthetic as S
from studio_ui.navigation import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _page() -> AppTest:
    return AppTest.from_file(str(ROOT / "app_pages" / "dumps.py"), default_timeout=60).run()


def _field(at: AppTest, label: str):
    return next(t for t in at.text_input if t.label == label)


@pytest.fixture
def no_jobs_left():
    """The page's ingest service is one per process: later page tests must not see our job."""
    yield
    from studio_ui.services_ingest import ingest_service

    ingest_service.clear()


def test_page_ingests_over_ray(
    ray_cluster, tmp_path: Path, workspace_dir: Path, no_jobs_left
) -> None:
    cfg = S.SynthConfig()
    session = S.write_msit(tmp_path / "dump", cfg, S.make_truth(cfg, [3, 2], seed=7), 4)
    at = _page()
    _field(at, "Dump folder").set_value(str(session))
    _field(at, "Run name (optional)").set_value("over ray")
    _field(at, "Ray head (optional)").set_value(ray_cluster.address)
    next(b for b in at.button if b.label == "Ingest").click()
    at.run()
    assert not at.exception, at.exception
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(2)
        at = _page()
        frames = [d.value for d in at.dataframe]
        jobs = next(f for f in frames if "state" in f and "mode" in f)
        assert list(jobs["mode"]) == ["ray"] and list(jobs["error"]) == [""], jobs.to_dict()
        if list(jobs["state"]) == ["done"]:
            break
    else:
        pytest.fail("the ingest over Ray did not finish")
    runs = next(f for f in frames if "tp_size" in f)
    assert not at.exception, at.exception
    assert list(runs["name"]) == ["over ray"] and int(runs["tp_size"].iloc[0]) == 4
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["failed"] == "0" and int(metrics["verified"].replace(",", "")) > 0


def test_watch_with_a_ray_head_says_why_not(tmp_path: Path, workspace_dir: Path) -> None:
    at = _page()
    _field(at, "Dump folder").set_value(str(tmp_path))
    _field(at, "Ray head (optional)").set_value("127.0.0.1:6379")
    next(b for b in at.button if b.label == "Watch").click()
    at.run()
    assert not at.exception
    assert any("with a Ray head" in e.value for e in at.error)
