"""Home's "Run the demo" button produces a real dump in the studio's workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.navigation import ROOT

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
