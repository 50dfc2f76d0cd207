"""The page's PyVista view of a surface (stpyvista, vtk.js in the browser): a PyVista plotter
holding the same actors as the PNG export (``vtk_scene.Scene``), without the box axes, whose
labels vtk.js cannot draw; the real token and channel ranges are written as text."""

from __future__ import annotations

import os

from studio_backend.analysis.grid import Grid

# Off-screen rendering through EGL + Mesa (ENVIRONMENT.md); X is never available here.
os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def plotter(
    grid: Grid,
    *,
    label: str = "value",
    title: str = "",
    absolute: bool = False,
    sorted_channels: bool = False,
    window_size: tuple[int, int] = (1000, 700),
):
    """An off-screen PyVista plotter showing ``grid`` (for ``stpyvista``)."""
    import pyvista as pv

    from studio_ui.figures.vtk_scene import Scene

    p = pv.Plotter(off_screen=True, window_size=list(window_size))
    Scene(p.renderer, axes=False).show(
        grid, label=label, title=title, absolute=absolute, sorted_channels=sorted_channels
    )
    p.renderer.camera_set = True  # the scene aimed the camera: PyVista must not re-aim it
    return p
