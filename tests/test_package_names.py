"""The project's packages never shadow PyPI packages its dependencies import (issue 14)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    # The checkout root first on sys.path, as pytest, Streamlit and `python -c` in it put it.
    prog = f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}"
    out = subprocess.run([sys.executable, "-c", prog], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_pypi_kernels_is_not_shadowed_by_the_kernels_folder() -> None:
    where = _run("from kernels import CUDAProperties; import kernels; print(kernels.__file__)")
    assert "site-packages" in where and not where.startswith(str(REPO / "kernels"))


def test_transformers_hub_kernels_imports_from_the_checkout() -> None:
    assert _run("import transformers.integrations.hub_kernels as h; print(h.__name__)") == (
        "transformers.integrations.hub_kernels"
    )


def test_studio_kernels_lives_in_the_kernels_folder() -> None:
    where = _run("import studio_kernels.awq as a; print(a.__file__)")
    assert Path(where) == REPO / "kernels" / "studio_kernels" / "awq.py"
