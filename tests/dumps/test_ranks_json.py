"""ranks.json in each accepted shape; anything else is one line naming the file (CLI too)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from studio_backend.cli import main
from studio_backend.dumps import query
from studio_backend.dumps.detect import detect
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.dumps.ranks_json import parse_ranks
from studio_backend.errors import InputError

P = Path("ranks.json")


@pytest.mark.parametrize(
    "data",
    [
        ["cpu_4000", "cpu_4001"],
        {"cpu_4000": 0, "cpu_4001": 1},
        {"ranks": ["cpu_4000", "cpu_4001"], "world_size": 2},
        {"ranks": {"cpu_4000": 0, "cpu_4001": 1}},
        {"ranks": {"cpu_4001": {"rank": 1, "pid": 4001}, "cpu_4000": {"rank": 0, "pid": 4000}}},
        {"cpu_4000": {"rank": 0}, "cpu_4001": {"rank": 1}},
    ],
)
def test_accepted_shapes(data) -> None:
    assert parse_ranks(P, data) == {"cpu_4000": 0, "cpu_4001": 1}


@pytest.mark.parametrize(
    "data,problem",
    [
        ({"ranks": {"cpu_4000": {"pid": 4000}}}, "entry 'cpu_4000' has no 'rank'"),
        ({"ranks": {"cpu_4000": {"rank": "0"}}}, "rank of 'cpu_4000' is '0', not a non-negative"),
        ({"cpu_4000": "zero"}, "rank of 'cpu_4000' is 'zero'"),
        ({"cpu_4000": True}, "rank of 'cpu_4000' is True"),
        ({"ranks": 2}, "unrecognised ranks.json (int)"),
        ("cpu_4000", "unrecognised ranks.json (str)"),
        ({}, "unrecognised ranks.json (dict)"),
        ([0, 1], "a list must hold folder names"),
        (["a", "a"], "a folder is listed twice"),
        ({"a": 0, "b": 0}, "two folders claim the same rank"),
    ],
)
def test_other_shapes_are_clear_errors(data, problem) -> None:
    with pytest.raises(InputError) as exc:
        parse_ranks(P, data)
    assert str(exc.value).startswith("ranks.json: ") and problem in str(exc.value)


def _split_sessions(session: Path) -> Path:
    """Rank 1 in its own msit session (as separate rank processes write them)."""
    other = session.parent / "msit_dump_20261123_010001" / "torch_tensors"
    other.mkdir(parents=True)
    shutil.move(str(session / "torch_tensors" / "cpu_4001"), other / "cpu_4001")
    return other


def test_nested_ranks_json_stitches(synth_dump, workspace) -> None:
    """The {"ranks": {folder: {"rank": r, ...}}} shape that used to end `studio stitch` with a
    TypeError: the run is the two ranks, stitched to the unsharded truth."""
    session, truth, _ = synth_dump(2, device="cpu")
    other = _split_sessions(session)
    (session / "ranks.json").write_text(json.dumps(
        {"ranks": {"cpu_4000": {"rank": 0, "pid": 4000}, "cpu_4001": {"rank": 1, "pid": 4001}}}
    ))  # fmt: skip
    assert detect(other / "cpu_4001").ranks == {"cpu_4000": 0, "cpu_4001": 1}
    run = ingest_dump(workspace, session)
    df = query.find_tensors(
        workspace, run, step=0, module_regex=r"layers\.0\.self_attn\.qkv_proj$", io="output"
    )
    whole = df[df.part.isna()]
    np.testing.assert_array_equal(
        query.load_tensor(workspace, int(whole.tensor_id.iloc[0])).numpy(),
        truth[(0, "model.layers.0.self_attn.qkv_proj", "output", 0)],
    )


def test_stitch_cli_names_a_bad_ranks_json(synth_dump, tmp_path, workspace_dir, capsys) -> None:
    session, _, _ = synth_dump(2, device="cpu")
    bad = session / "ranks.json"
    bad.write_text(json.dumps({"ranks": {"cpu_4000": {"pid": 4000}, "cpu_4001": {"pid": 4001}}}))
    rc = main(["--workspace", str(workspace_dir), "stitch", str(session), "--out",
               str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err
    # the run is stitched as without ranks.json (PID order, noted); the bad file is reported
    assert rc == 1 and "Traceback" not in err
    assert (
        f"studio stitch: bad_ranks_json: {bad}: entry 'cpu_4000' has no 'rank' (expected a list"
        ' of rank folders, {"folder": rank}, {"ranks": {"folder": rank}} or {"ranks": {"folder":'
        ' {"rank": r, ...}}}); ignored'
    ) in err.splitlines()
    bad.write_text(json.dumps({"ranks": {"cpu_4000": {"rank": 0}, "cpu_4001": {"rank": 1}}}))
    assert main(["stitch", str(session), "--out", str(tmp_path / "out"),
                 "--workspace", str(workspace_dir)]) == 0  # fmt: skip
    assert len(list((tmp_path / "out").rglob("*.npy"))) > 0
