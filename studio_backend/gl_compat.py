"""Load order between Triton and VTK's software OpenGL.

Triton and Mesa's llvmpipe (which VTK renders through off-screen) each bring an LLVM. Loading
Triton's native library after llvmpipe has been initialised segfaults (seen with triton 3.9 and
vtk 9.7 + Mesa on Debian 12), while the other order works. Every process that may render with
VTK calls :func:`load_triton_before_gl` before its first render.
"""

from __future__ import annotations

import importlib
import importlib.util


def load_triton_before_gl() -> None:
    """Import triton now if it is installed (a no-op when absent or already imported)."""
    try:
        if importlib.util.find_spec("triton") is None:
            return
        importlib.import_module("triton")
    except Exception:  # noqa: BLE001,S110 - a broken triton must not stop rendering
        pass
