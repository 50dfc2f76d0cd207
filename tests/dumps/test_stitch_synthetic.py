"""Stitched tensors equal the unsharded truth the synthetic dump was sharded from (vLLM TP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from studio_backend.dumps import query
from studio_backend.dumps.ingest import ingest_dump

Q_W, KV_W, INTER = 16, 8, 8  # SynthConfig: 4 heads x 4, 2 KV heads x 4, intermediate 8


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_every_stitched_tensor_equals_truth(tp, synth_dump, workspace) -> None:
    session, truth, _cfg = synth_dump(tp)
    run = ingest_dump(workspace, session)
    df = query.find_tensors(workspace, run)
    whole = df[df.part.isna()]
    checked = 0
    for key, arr in truth.items():
        step, module, io, idx = key
        if io == "_partials" or arr is None:
            continue
        row = whole[
            (whole.step == step) & (whole.module == module) & (whole.io == io) & (whole.idx == idx)
        ]
        assert len(row) == 1, key
        got = query.load_tensor(workspace, int(row.tensor_id.iloc[0]))
        np.testing.assert_array_equal(got.numpy(), arr, err_msg=str(key))
        checked += 1
    assert checked == len(whole)
    report = (
        workspace.cursor()
        .execute(
            "SELECT verdict, count(*) FROM dump_stitch_report WHERE run_id = ? GROUP BY 1", [run]
        )
        .fetchall()
    )
    assert "failed" not in dict(report) and "unknown" not in dict(report)
    # a replicated tensor is not copied: its stitched row points at rank 0's file
    rep = workspace.cursor().execute(
        "SELECT t.store_group, t.source_file, r.ranks FROM dump_stitch_report r "
        "JOIN dump_tensors t USING (tensor_id) WHERE r.run_id = ? AND r.rule IN "
        "('replicated', 'single_rank')", [run],
    ).fetchall()  # fmt: skip
    assert rep and all(g is None and "npu0_" in src for g, src, _ in rep)


@pytest.mark.parametrize("tp", [2, 4])
def test_parts_and_partial_sums(tp, synth_dump, workspace) -> None:
    session, truth, _cfg = synth_dump(tp)
    run = ingest_dump(workspace, session)
    parts = query.find_tensors(
        workspace, run, step=0, module_regex=r"qkv_proj$|gate_up_proj$", io="output"
    )
    qkv = truth[(0, "model.layers.0.self_attn.qkv_proj", "output", 0)]
    gu = truth[(0, "model.layers.0.mlp.gate_up_proj", "output", 0)]
    want = {
        "q": qkv[:, :Q_W], "k": qkv[:, Q_W : Q_W + KV_W], "v": qkv[:, Q_W + KV_W :],
        "gate": gu[:, :INTER], "up": gu[:, INTER:],
    }  # fmt: skip
    for _, row in parts[parts.part.notna() & (parts.layer == 0)].iterrows():
        np.testing.assert_array_equal(
            query.load_tensor(workspace, row.tensor_id).numpy(), want[row.part]
        )
    assert sorted(parts[parts.layer == 0].part.dropna()) == ["gate", "k", "q", "up", "v"]
    rep = (
        workspace.cursor()
        .execute(
            "SELECT verdict, ranks, detail FROM dump_stitch_report WHERE run_id = ? AND rule = 'partial_sum'",
            [run],
        )
        .fetchall()
    )
    assert rep and all(v == "verified" and r == list(range(tp)) for v, r, _ in rep)
    # KV replica de-dup is only needed (and verified) when tp > num_kv_heads
    kv = (
        workspace.cursor()
        .execute("SELECT detail FROM dump_stitch_report WHERE run_id = ? AND rule = 'qkv'", [run])
        .fetchall()
    )
    assert all(("de-duplicated" in d[0]) == (tp == 4) for d in kv)


def test_bf16_kept_in_store(synth_dump, workspace) -> None:
    session, truth, _ = synth_dump(2, dtype=torch.bfloat16)
    run = ingest_dump(workspace, session)
    df = query.find_tensors(workspace, run, step=1, module_regex=r"layers\.1\.mlp\.experts$")
    t = query.load_tensor(workspace, int(df.tensor_id.iloc[0]))
    assert t.dtype == torch.bfloat16 and df.dtype.iloc[0] == "bfloat16"
    np.testing.assert_array_equal(
        t.float().numpy(), truth[(1, "model.layers.1.mlp.experts", "output", 0)]
    )


def test_reingest_is_exactly_once(synth_dump, workspace) -> None:
    session, _, _ = synth_dump(2)
    run = ingest_dump(workspace, session)
    counts = workspace.table_counts()
    assert ingest_dump(workspace, session / "torch_tensors" / "npu1_4001" / "0") == run
    after = workspace.table_counts()
    assert after.pop("activity") == counts.pop("activity") + 1  # the second ingest is logged
    assert after == counts


def test_ranks_in_separate_sessions_are_one_run(synth_dump, workspace) -> None:
    """Each rank process may stamp its own msit_dump_<ts> (seconds apart); ranks.json joins them."""
    import json
    import shutil

    session, truth, _ = synth_dump(2, device="cpu")
    other = session.parent / "msit_dump_20261123_010001" / "torch_tensors"
    other.mkdir(parents=True)
    shutil.move(str(session / "torch_tensors" / "cpu_4001"), other / "cpu_4001")
    (session / "ranks.json").write_text(json.dumps({"cpu_4000": 0, "cpu_4001": 1}))
    run = ingest_dump(workspace, other / "cpu_4001" / "0")  # any folder of any session
    assert query.run_info(workspace, run)["tp_size"] == 2
    df = query.find_tensors(
        workspace, run, step=0, module_regex=r"layers\.0\.self_attn\.qkv_proj$", io="output"
    )
    whole = df[df.part.isna()]
    np.testing.assert_array_equal(
        query.load_tensor(workspace, int(whole.tensor_id.iloc[0])).numpy(),
        truth[(0, "model.layers.0.self_attn.qkv_proj", "output", 0)],
    )
    assert ingest_dump(workspace, session) == run  # rank 0's session names the same run


def test_crash_in_batched_ingest_resumes_exactly_once(
    synth_dump, workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stitch that dies mid-way: what was queued is committed, and a rerun completes the run
    with the same rows as an uninterrupted ingest (nothing lost, nothing twice)."""
    import studio_backend.dumps.ingest as ingest_mod
    import studio_backend.dumps.pipeline.stitch_stage as stitch_mod
    from studio_backend.dumps.detect import detect
    from studio_backend.workspace import open_workspace

    session, truth, _ = synth_dump(4)
    real, calls = stitch_mod.run_stitch, []

    def dies_on_the_20th(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 20:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(stitch_mod, "run_stitch", dies_on_the_20th)
    ing = ingest_mod.Ingestor(workspace, detect(session), workers=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ing.ingest_all(ing.layout.tensor_files(), batch_files=16, flush_s=0.0)
    monkeypatch.setattr(stitch_mod, "run_stitch", real)
    run = ingest_dump(workspace, session)  # the restart
    key = "SELECT step, module, io, idx, rank, part FROM dump_tensors WHERE run_id = ? ORDER BY ALL"
    got = workspace.cursor().execute(key, [run]).fetchall()
    clean = open_workspace(workspace.root.parent / "clean")
    try:
        want = clean.cursor().execute(key, [ingest_dump(clean, session)]).fetchall()
    finally:
        clean.close()
    assert got == want and len(got) == len(set(got))
    df = query.find_tensors(workspace, run)
    row = df[(df.module == "model.layers.0.self_attn.qkv_proj") & (df.io == "output")
             & (df.step == 1) & df.part.isna()]  # fmt: skip
    np.testing.assert_array_equal(
        query.load_tensor(workspace, int(row.tensor_id.iloc[0])).numpy(),
        truth[(1, "model.layers.0.self_attn.qkv_proj", "output", 0)],
    )
