"""Real vLLM 0.32's dump layout (REFERENCE.md 2b) stitches to the unsharded truth, decided from
the data: 1-ulp replicas are verified (no false alarm), the already-reduced experts output is
kept (never summed), and a stitch that fails leaves no stitched tensor anywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from studio_backend.dumps import query
from studio_backend.dumps import synthetic_vllm as V
from studio_backend.dumps.export import export_npy
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.dumps.synthetic import SynthConfig

CFG = SynthConfig(layers=3, dense_layers=(0,))  # 4 heads, 2 KV heads, head_dim 4, 4 experts


def _dump(tmp_path: Path, tp: int, **kw):
    truth = V.make_truth(CFG, [5, 1], seed=3)
    return V.write_msit(tmp_path / f"vllm_tp{tp}", CFG, truth, tp, **kw), truth


def _report(ws, run: str) -> dict[tuple[int, str, str, int], tuple]:
    rows = ws.cursor().execute(
        "SELECT step, module, io, idx, verdict, rule, max_abs_diff, detail, tensor_id "
        "FROM dump_stitch_report WHERE run_id = ?", [run],
    ).fetchall()  # fmt: skip
    return {r[:4]: r[4:] for r in rows}


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_every_stitched_tensor_equals_truth(tp, tmp_path, workspace) -> None:
    session, truth = _dump(tmp_path, tp)
    run = ingest_dump(workspace, session)
    df = query.find_tensors(workspace, run)
    whole = df[df.part.isna()]
    for key, arr in truth.items():
        step, module, io, idx = key
        row = whole[(whole.step == step) & (whole.module == module) & (whole.io == io)
                    & (whole.idx == idx)]  # fmt: skip
        assert len(row) == 1, key
        got = query.load_tensor(workspace, int(row.tensor_id.iloc[0])).numpy()
        np.testing.assert_array_equal(got, arr, err_msg=str(key))  # bit-exact: first replica
    assert len(whole) == len(truth)
    rep = _report(workspace, run)
    assert {v[0] for v in rep.values()} <= {"verified", "assumed"}
    # the experts output is equal on all ranks: kept as already reduced, never summed
    experts = rep[(0, "model.layers.1.mlp.experts", "output", 0)]
    want_rule = "single_rank" if tp == 1 else "replicated"
    assert experts[:2] == ("verified", want_rule)
    if tp > 1:
        assert "already reduced" in experts[3]
        assert 0 < experts[2] < 1e-8  # the recorded 1-ulp rounding of the all-reduce


def test_kv_replicas_one_ulp_apart_are_verified_not_failed(tmp_path, workspace) -> None:
    """TP=4 > 2 KV heads: replicas differ by 1 float32 ulp, as real vLLM's do (1.2e-7)."""
    session, truth = _dump(tmp_path, 4)
    run = ingest_dump(workspace, session)
    rep = _report(workspace, run)
    kv = {
        k: v for k, v in rep.items()
        if k[1].endswith(("attn", "k_norm", "qkv_proj", "rotary_emb"))
        and (k[2], k[3]) in {("input", 1), ("input", 2), ("output", 0), ("output", 1)}
        and v[1] in ("kv_cols", "kv_heads", "qkv")
    }  # fmt: skip
    assert len(kv) >= 3 * 2 * 3  # qkv_proj, k_norm, attn k and v per layer and step, rotary
    for key, (verdict, _rule, diff, detail, tid) in kv.items():
        assert verdict == "verified" and tid is not None, key
        assert 0 < diff <= 4 * np.finfo(np.float32).eps * 8, (key, diff)  # |x| < 8
        assert "within rounding" in detail and "de-duplicated" in detail
    errors = query.ingest_errors(workspace, run)
    assert errors[errors.kind.isin(["stitch_failed", "shape_mismatch"])].empty


def test_no_config_kv_groups_from_the_data(tmp_path, workspace) -> None:
    """Without config.json, KV replica groups are read from the data (consecutive equal ranks)."""
    session, truth = _dump(tmp_path, 4, config_json=False)
    run = ingest_dump(workspace, session)
    rep = _report(workspace, run)
    key = (0, "model.layers.2.self_attn.attn", "input", 1)
    verdict, rule, diff, detail, tid = rep[key]
    assert (verdict, rule) == ("verified", "kv_cols") and "groups from the data" in detail
    np.testing.assert_array_equal(query.load_tensor(workspace, tid).numpy(), truth[key])
    assert rep[(0, "model.layers.0.self_attn.qkv_proj", "output", 0)][0] == "unknown"


def test_act_fn_and_attn_rules(tmp_path, workspace) -> None:
    session, truth = _dump(tmp_path, 2)
    run = ingest_dump(workspace, session)
    rep = _report(workspace, run)
    assert rep[(0, "model.layers.0.mlp.act_fn", "input", 0)][1] == "gate_up"
    assert rep[(0, "model.layers.0.mlp.act_fn", "output", 0)][1] == "concat_last"
    assert rep[(0, "model.layers.1.self_attn.attn", "input", 0)][1] == "concat_last"
    assert rep[(0, "model.layers.1.mlp.experts.gate", "output", 0)][:2] == (
        "verified",
        "replicated",
    )
    parts = query.find_tensors(workspace, run, step=0, module_regex=r"layers\.0\.mlp\.act_fn$",
                               io="input")  # fmt: skip
    gu = truth[(0, "model.layers.0.mlp.act_fn", "input", 0)]
    got = {p: query.load_tensor(workspace, int(t)).numpy() for p, t in
           zip(parts.part, parts.tensor_id, strict=True) if isinstance(p, str)}  # fmt: skip
    np.testing.assert_array_equal(got["gate"], gu[:, : CFG.intermediate])
    np.testing.assert_array_equal(got["up"], gu[:, CFG.intermediate :])


def test_failed_replica_is_not_stitched_written_or_exported(tmp_path, workspace) -> None:
    """Rank 1's o_proj output is off by 1e-3 (far beyond rounding): the stitch fails, no stitched
    tensor exists (nothing to export or draw), the rank tensors stay available."""
    key = (0, "model.layers.1.self_attn.o_proj", "output", 0)
    session, truth = _dump(tmp_path, 2, tamper={key: 1e-3})
    run = ingest_dump(workspace, session)
    verdict, rule, diff, detail, tid = _report(workspace, run)[key]
    assert (verdict, rule, tid) == ("failed", "replicated", None)
    assert diff == pytest.approx(1e-3, rel=1e-3) and "rank tensors" in detail
    df = query.find_tensors(workspace, run, step=0, module_regex=r"layers\.1\.self_attn\.o_proj$")
    assert set(df.io) == {"input"}  # the input stitched; the output did not
    ranks = query.find_tensors(workspace, run, step=0, module_regex=r"layers\.1\.self_attn\.o_proj$",
                               io="output", stitched=False)  # fmt: skip
    assert sorted(ranks["rank"]) == [0, 1]
    np.testing.assert_array_equal(query.load_tensor(workspace, int(ranks.tensor_id.iloc[0])).numpy(),
                                  truth[key])  # fmt: skip
    out = tmp_path / "export"
    files = export_npy(workspace, run, out, steps=[0])
    assert (out / "step0" / "layers.1.self_attn.o_proj" / "input.npy") in files
    assert not (out / "step0" / "layers.1.self_attn.o_proj" / "output.npy").exists()
    assert (query.ingest_errors(workspace, run).kind == "stitch_failed").sum() == 1


def test_shared_modules_are_flagged(tmp_path, workspace) -> None:
    session, _ = _dump(tmp_path, 2)
    run = ingest_dump(workspace, session)
    flags = {
        (m, k): (also, ev)
        for m, k, also, ev in workspace.cursor().execute(
            "SELECT module, kind, also, evidence FROM dump_shared_modules WHERE run_id = ?", [run]
        ).fetchall()
    }  # fmt: skip
    assert flags == {
        ("model.layers.2.self_attn.rotary_emb", "shared_by_layers"): ("0,1,2", "names"),
        ("model.layers.2.self_attn.rotary_emb", "in_place"): ("", "data"),
        ("model.layers.1.mlp.experts.gate", "alias"): ("model.layers.1.mlp.gate", "names"),
        ("model.layers.2.mlp.experts.gate", "alias"): ("model.layers.2.mlp.gate", "names"),
    }


def test_activations_source_names_what_did_not_stitch(tmp_path, workspace) -> None:
    from studio_backend.analysis import source

    key = (0, "model.layers.1.self_attn.o_proj", "output", 0)
    session, _ = _dump(tmp_path, 2, tamper={key: 1e-3})
    run = ingest_dump(workspace, session)
    miss = source.not_stitched(workspace, run, step=0, pattern=r"layers\.1\.", io="output")
    assert list(zip(miss.module, miss.verdict, strict=True)) == [(key[1], "failed")]
    assert source.not_stitched(workspace, run, step=0, io="input").empty
    rows = source.tensors(workspace, run, step=0, pattern=r"layers\.1\.self_attn\.o_proj$")
    assert set(rows.io) == {"input"}  # what the page can draw
