"""The locks in locks/ (issue 14): parsed, applied per machine, and checked against the install."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("studio_lock", REPO / "scripts" / "lock.py")
lock = importlib.util.module_from_spec(spec)
sys.modules["studio_lock"] = lock
spec.loader.exec_module(lock)


def test_studio_lock_pins_what_broke_the_fresh_install() -> None:
    pins = lock.read_lock(REPO / "locks" / "studio.txt")
    assert pins["transformers"] == "5.25.0" and pins["kernels"] == "0.19.1"
    assert pins["torch"] == "2.13.0+cpu"
    assert "inspection-studio" not in pins and "pip" not in pins


def test_constraints_keep_a_machines_own_torch(tmp_path: Path) -> None:
    f = tmp_path / "lock.txt"
    f.write_text("# head\nnumpy==2.3.1\nsympy==1.14.0  # torch\ntorch==2.13.0+cpu  # torch\n")
    same, note = lock.constraints(f, "2.13.0+cpu")
    assert same.split() == ["numpy==2.3.1", "sympy==1.14.0", "torch==2.13.0+cpu"] and note == ""
    other, note = lock.constraints(f, "2.5.1+npu")
    assert other.split() == ["numpy==2.3.1", "torch==2.5.1+npu"] and "2.5.1+npu" in note


def test_installed_set_matches_the_lock() -> None:
    import pytest
    import torch

    if torch.__version__ != lock.read_lock(REPO / "locks" / "studio.txt")["torch"]:
        pytest.skip(f"this machine brings its own torch {torch.__version__}: torch pins differ")
    # The suite runs in the locked environment; `.ci/run` makes the same check before it.
    assert lock.check(lock.STACKS["studio"], REPO / "locks" / "studio.txt") == []


def test_ray_joins_the_studio_venv_without_moving_a_studio_pin() -> None:
    """`make ray` installs Ray into the studio's venv: every package both locks name has one
    version, so `make check-lock` (studio) still passes with Ray installed."""
    studio = lock.read_lock(REPO / "locks" / "studio.txt")
    ray = lock.read_lock(REPO / "locks" / "ray.txt")
    assert ray["ray"] == "2.60.0"
    both = sorted(set(studio) & set(ray))
    assert both and {n: ray[n] for n in both} == {n: studio[n] for n in both}


def test_make_test_installs_ray_and_checks_its_lock() -> None:
    """CI (.ci/run: make check-lock && make test) on a clean machine gets Ray and checks it."""
    rules = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        if ":" in line and not line.startswith(("\t", "#", " ")) and "=" not in line:
            target, deps = line.split(":", 1)
            rules[target.strip()] = deps.split()
    assert "ray" in rules["test"] and "ray" in rules["check-lock"]
    assert "$(PY) scripts/lock.py check ray locks/ray.txt" in (REPO / "Makefile").read_text()


def test_installed_ray_matches_its_lock() -> None:
    import pytest

    pytest.importorskip("ray")
    assert lock.check(lock.STACKS["ray"], REPO / "locks" / "ray.txt") == []
