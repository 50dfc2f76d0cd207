"""Rendering with VTK and then using Triton in one process must not crash (studio_backend/gl_compat)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SCRIPT = """
from studio_backend.gl_compat import load_triton_before_gl
load_triton_before_gl()
import pyvista as pv
plotter = pv.Plotter(off_screen=True)
plotter.add_mesh(pv.Sphere())
print(plotter.screenshot(return_img=True).shape)
import triton.language
print("triton after render ok")
"""


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("triton") is None, reason="triton not installed"
)
def test_render_then_triton_does_not_crash() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "(768, 1024, 3)" in out.stdout and "triton after render ok" in out.stdout
