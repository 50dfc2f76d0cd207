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
    PageSpec("app_pages/home.py", "Home", ":material/home:", "home"),
    PageSpec("app_pages/launch.py", "Launch", ":material/rocket_launch:", "launch"),
    PageSpec("app_pages/dumps.py", "Dumps", ":material/folder_open:", "dumps"),
    PageSpec("app_pages/activations.py", "Activations", ":material/view_in_ar:", "activations"),
    PageSpec("app_pages/compare.py", "Compare", ":material/compare_arrows:", "compare"),
    PageSpec("app_pages/experts.py", "Experts", ":material/hub:", "experts"),
    PageSpec("app_pages/kernels.py", "Kernels", ":material/speed:", "kernels"),
    PageSpec(
        "app_pages/sparse_attention.py",
        "Sparse attention",
        ":material/grid_on:",
        "sparse_attention",
    ),
    PageSpec("app_pages/trace.py", "Trace", ":material/timeline:", "trace"),
)


def available_pages() -> list[PageSpec]:
    return [p for p in PAGES if (ROOT / p.file).is_file()]
