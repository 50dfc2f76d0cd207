"""The surface component's served directory: the frontend and plotly.js, byte for byte."""

from __future__ import annotations

from pathlib import Path

from studio_ui.components.surface import FRONTEND, PLOTLY_JS, served_dir


def test_served_dir_holds_frontend_and_plotly(tmp_path: Path) -> None:
    out = served_dir(tmp_path)
    assert out.parent == tmp_path / "inference-studio" / "components"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["index.html", "plotly.min.js", "surface.js"]
    assert (out / "plotly.min.js").read_bytes() == PLOTLY_JS.read_bytes()
    for name in ("index.html", "surface.js"):
        assert (out / name).read_bytes() == (FRONTEND / name).read_bytes()
    # index.html loads exactly the two scripts that sit beside it.
    html = (out / "index.html").read_text()
    assert '<script src="plotly.min.js">' in html and '<script src="surface.js">' in html
    assert served_dir(tmp_path) == out  # made once, found again
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no leftover temp dir


def test_served_dir_follows_content(tmp_path: Path, monkeypatch) -> None:
    """A changed frontend file (or a plotly upgrade) gets a new directory, never a stale one."""
    first = served_dir(tmp_path)
    front = tmp_path / "front"
    front.mkdir()
    for p in FRONTEND.iterdir():
        (front / p.name).write_bytes(p.read_bytes())
    (front / "surface.js").write_text("// changed\n")
    monkeypatch.setattr("studio_ui.components.surface.FRONTEND", front)
    second = served_dir(tmp_path)
    assert second != first
    assert (second / "surface.js").read_text() == "// changed\n"
