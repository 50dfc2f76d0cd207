"""Every page runs headless (AppTest) against a fresh workspace without an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio_backend.workspace import open_workspace
from studio_ui.navigation import ROOT, available_pages


@pytest.mark.parametrize("page", [p.file for p in available_pages()])
def test_page_runs(page: str, workspace_dir: Path) -> None:
    # Through the real navigation: a page run on its own cannot resolve st.page_link targets.
    at = AppTest.from_file(str(ROOT / "run_studio.py"), default_timeout=60).run()
    if page != "app_pages/home.py":
        at.switch_page(page).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_home_shows_real_counts(workspace_dir: Path) -> None:
    ws = open_workspace(workspace_dir)
    for i in range(4):
        ws.log("test", f"seeded {i}")
    total = sum(ws.table_counts().values())
    ws.close()
    at = AppTest.from_file(str(ROOT / "run_studio.py"), default_timeout=60).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows stored"] == f"{total:,}"
    assert metrics["Workspace"] == "workspace"
    activity = at.dataframe[1].value
    assert list(activity["message"]) == ["seeded 3", "seeded 2", "seeded 1", "seeded 0"]


@pytest.mark.parametrize("page", [p.file for p in available_pages()])
def test_page_without_a_workspace_shows_an_error_not_a_traceback(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the workspace folder should be\n")
    monkeypatch.setenv("STUDIO_WORKSPACE", str(blocker))
    at = AppTest.from_file(str(ROOT / "run_studio.py"), default_timeout=60).run()
    if page != "app_pages/home.py":
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(str(blocker) in e.value for e in at.error), [e.value for e in at.error]
