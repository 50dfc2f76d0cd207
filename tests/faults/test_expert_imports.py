"""Expert-load imports validate before storing (issue 17 item 5): nothing impossible is stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import torch

from studio_backend.errors import InputError
from studio_backend.moe.records import COLUMNS, LoadSet, validate

REPO = Path(__file__).resolve().parents[2]


def studio(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(ws), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def stored_sources(ws: Path) -> int:
    if not (ws / "studio.duckdb").exists():
        return 0
    con = duckdb.connect(str(ws / "studio.duckdb"), read_only=True)
    return con.execute("SELECT count(*) FROM moe_sources").fetchone()[0]


def _pt(tmp: Path, name: str, value) -> Path:
    path = tmp / name
    torch.save(value, str(path))
    return path


def _expert_map(tmp: Path, experts: list[list[int]]) -> Path:
    path = tmp / "map.json"
    layer = {
        "layer_id": 0,
        "device_count": len(experts),
        "device_list": [{"device_id": i, "device_expert": e} for i, e in enumerate(experts)],
    }
    path.write_text(json.dumps({"moe_layer_count": 1, "layer_list": [layer]}))
    return path


CASES = {
    "all-zero load": (
        lambda t: [_pt(t, "z.pt", torch.zeros(2, 8, dtype=torch.int64))],
        "every expert count is 0",
    ),
    "inf counts": (
        lambda t: [_pt(t, "i.pt", torch.tensor([[1.0, float("inf")], [2.0, 3.0]]))],
        "inf or NaN",
    ),
    "empty load": (lambda t: [_pt(t, "e.pt", torch.zeros(0, 8, dtype=torch.int64))], "is empty"),
    "devices 0": (
        lambda t: [_pt(t, "d.pt", torch.ones(2, 8, dtype=torch.int64)), "--devices", "0"],
        "must be >= 1",
    ),
    "devices negative": (
        lambda t: [_pt(t, "n.pt", torch.ones(2, 8, dtype=torch.int64)), "--devices", "-3"],
        "must be >= 1",
    ),
    "expert map ids out of range": (
        lambda t: [
            _pt(t, "m.pt", torch.ones(1, 8, dtype=torch.int64)),
            "--expert-map",
            str(_expert_map(t, [[0, 1, 2, 3], [4, 5, 6, 999]])),
        ],
        "never placed",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_impossible_expert_load_is_refused_and_nothing_stored(tmp_path: Path, case: str) -> None:
    make, words = CASES[case]
    ws = tmp_path / "ws"
    out = studio(ws, "experts", *map(str, make(tmp_path)))
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert words in out.stderr and "Traceback" not in out.stderr
    assert stored_sources(ws) == 0


def test_a_valid_load_still_imports(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    load = torch.tensor([[5, 0, 3, 1], [2, 2, 2, 2]])
    out = studio(ws, "experts", str(_pt(tmp_path, "ok.pt", load)), "--json")
    assert out.returncode == 0, out.stderr
    assert stored_sources(ws) == 1


def _load(**kw) -> LoadSet:
    counts = pd.DataFrame([[0, -1, 0, 0, 0, 0, 3], [0, -1, 0, 1, 0, 1, 1]], columns=COLUMNS)
    base = dict(kind="t", path="x.pt", counts=counts, num_experts=2, num_devices=1, top_k=1)
    return LoadSet(**{**base, **kw})


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"top_k": 3}, "top-k 3 is outside 1..2"),
        ({"num_experts": 0}, "number of experts must be >= 1"),
        ({"num_devices": 0}, "number of devices must be >= 1"),
        ({"num_experts": 1}, "expert id 1 is outside 0..0"),
    ],
)
def test_validate_names_the_impossible_field(kw: dict, words: str) -> None:
    validate(_load())  # the base case is fine
    with pytest.raises(InputError, match=words.replace(".", r"\.")):
        validate(_load(**kw))


def test_counts_below_zero_or_nan_in_rows_are_refused() -> None:
    bad = _load().counts.assign(count=np.array([3, -1]))
    with pytest.raises(InputError, match=">= 0"):
        validate(_load(counts=bad))
