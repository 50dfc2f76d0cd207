"""Bad files become rows in dump_ingest_errors; the rest of the dump is still ingested."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from studio_backend.dumps import query
from studio_backend.dumps.ingest import ingest_dump

QKV_OUT = "root.model.layers.0.self_attn.qkv_proj/output.pth"


def _errors(ws, run) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path, kind, msg in (
        ws.cursor()
        .execute("SELECT path, kind, message FROM dump_ingest_errors WHERE run_id = ?", [run])
        .fetchall()
    ):
        out.setdefault(kind, []).append(f"{path}: {msg}")
    return out


def _stitched_count(ws, run) -> int:
    return len(query.find_tensors(ws, run))


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_bad_files_are_reported_and_the_rest_ingested(synth_dump, workspace) -> None:
    session, truth, _ = synth_dump(2)
    rank1 = session / "torch_tensors" / "npu1_4001" / "0"
    # truncated (a file cut off mid-write)
    data = (rank1 / QKV_OUT).read_bytes()
    (rank1 / QKV_OUT).write_bytes(data[: len(data) // 2])
    # a dict, not a tensor
    torch.save({"x": torch.zeros(2)}, rank1 / "root.model.layers.0.input_layernorm/input_0.pth")
    # a pickle of an arbitrary object: refused by weights_only
    bad = rank1 / "root.model.layers.0.mlp.down_proj/output.pth"
    with bad.open("wb") as f:
        pickle.dump(Evil(), f)
    # a shape that disagrees across ranks
    torch.save(torch.zeros(5, 17), rank1 / "root.model.layers.1.mlp.gate/output.pth")
    run = ingest_dump(workspace, session)
    errs = _errors(workspace, run)
    assert any("qkv_proj/output.pth" in e and "truncated" in e for e in errs["unreadable"])
    assert any(
        "input_layernorm/input_0.pth" in e and "holds a dict" in e for e in errs["not_tensor"]
    )
    assert any("down_proj/output.pth" in e and "unsafe pickle" in e for e in errs["not_tensor"])
    assert any(
        "layers.1.mlp.gate step 0 output[0]" in e and "shape" in e for e in errs["shape_mismatch"]
    )
    assert len(errs["missing_rank"]) == 3  # the three unreadable files leave rank 0 alone
    # everything else at step 0 is still stitched and exact
    df = query.find_tensors(workspace, run, step=0, module_regex=r"o_proj$", io="input")
    np.testing.assert_array_equal(
        query.load_tensor(workspace, int(df.tensor_id.iloc[0])).numpy(),
        truth[(0, "model.layers.0.self_attn.o_proj", "input", 0)],
    )
    verdicts = dict(
        workspace.cursor()
        .execute(
            "SELECT module || ' ' || io, verdict FROM dump_stitch_report WHERE run_id = ? AND step = 0",
            [run],
        )
        .fetchall()
    )
    assert verdicts["model.layers.1.mlp.gate output"] == "failed"
    assert verdicts["model.layers.0.self_attn.qkv_proj output"] == "failed"
    assert verdicts["model.layers.0.self_attn.qkv_proj input"] == "verified"
    assert _stitched_count(workspace, run) > 40


def test_missing_rank_folder_for_a_step(synth_dump, workspace) -> None:
    session, _, _ = synth_dump(2)
    import shutil

    shutil.rmtree(session / "torch_tensors" / "npu1_4001" / "1")
    run = ingest_dump(workspace, session)
    errs = _errors(workspace, run)
    assert len(errs["missing_rank"]) == len(
        list((session / "torch_tensors" / "npu0_4000" / "1").glob("*/*.pth"))
    )
    assert all("rank(s) [1] of tp=2" in e for e in errs["missing_rank"])
    assert query.find_tensors(workspace, run, step=1).empty
    assert not query.find_tensors(workspace, run, step=0).empty


def test_unknown_class_is_flagged(synth_dump, workspace) -> None:
    session, _, _ = synth_dump(2)
    tt = session / "torch_tensors"
    for r, folder in enumerate(["npu0_4000", "npu1_4001"]):
        d = tt / folder / "0" / "root.model.layers.0.mystery"
        d.mkdir()
        torch.save(torch.full((5, 4), float(r)), d / "output.pth")  # differs across ranks
        d2 = tt / folder / "0" / "root.model.layers.0.oddity"
        d2.mkdir()
        torch.save(torch.ones(5, 4), d2 / "output.pth")  # identical on both ranks
    run = ingest_dump(workspace, session)
    errs = _errors(workspace, run)["unknown_class"]
    assert any("layers.0.mystery" in e and "not stitched" in e for e in errs)
    assert any("layers.0.oddity" in e and "kept as replicated" in e for e in errs)
    rep = dict(
        workspace.cursor()
        .execute(
            "SELECT module, verdict FROM dump_stitch_report WHERE run_id = ? AND module LIKE '%.0.%y'",
            [run],
        )
        .fetchall()
    )
    assert rep == {"model.layers.0.mystery": "unknown", "model.layers.0.oddity": "verified"}


def test_not_a_dump(tmp_path: Path, workspace) -> None:
    import pytest

    from studio_backend.errors import InputError

    with pytest.raises(InputError, match="not an msit_llm or msprobe dump"):
        ingest_dump(workspace, tmp_path)
