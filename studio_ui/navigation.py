"""The page list. A page appears only once its file exists (no placeholder pages)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PageSpec:
    file: str
    title: str
    icon: str
    url: str


PAGES: tuple[PageSpec, ...] = (
    PageSpec("pages/home.py", "Home", ":material/home:", "home"),
    PageSpec("pages/launch.py", "Launch", ":material/rocket_launch:", "launch"),
    PageSpec("pages/dumps.py", "Dumps", ":material/folder_open:", "dumps"),
    PageSpec("pages/activations.py", "Activations", ":material/view_in_ar:", "activations"),
    PageSpec("pages/compare.py", "Compare", ":material/compare_arrows:", "compare"),
    PageSpec("pages/experts.py", "Experts", ":material/hub:", "experts"),
    PageSpec("pages/kernels.py", "Kernels", ":material/speed:", "kernels"),
    PageSpec(
        "pages/sparse_attention.py", "Sparse attention", ":material/grid_on:", "sparse_attention"
    ),
    PageSpec("pages/trace.py", "Trace", ":material/timeline:", "trace"),
)


def available_pages() -> list[PageSpec]:
    return [p for p in PAGES if (ROOT / p.file).is_file()]
