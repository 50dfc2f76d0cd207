"""Home's "Run the demo" button produces a real dump and every page's data in the workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio_ui.navigation import ROOT

pytest.importorskip("msit_llm")


@pytest.mark.slow
def test_home_demo_button(workspace_dir: Path) -> None:
    at = AppTest.from_file(str(ROOT / "run_studio.py"), default_timeout=240).run()
    [button] = [b for b in at.button if b.label == "Run the demo"]
    button.click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    [root] = list((workspace_dir / "dumps").glob("msit_dump_*"))
    assert any(str(root) in s.value for s in at.success)
    assert len(list((root / "torch_tensors").iterdir())) == 2
    assert any("Every page has data now" in s.value for s in at.success)
    from studio_backend.workspace import open_workspace

    ws = open_workspace(workspace_dir, read_only=True)
    try:
        cur = ws.cursor()
        for table in ("dump_runs", "moe_sources", "dsa_traces", "profiles", "trace_runs"):
            assert cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table  # noqa: S608
    finally:
        ws.close()
