"""`studio stitch` (.npy layout), `studio stats --json`, `studio ingest` against the truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studio_backend.cli import main

FIELDS = [
    "step", "module", "io", "index", "rank", "dtype", "shape", "token_axis", "axis_source",
    "tokens", "channels", "min", "max", "mean", "std", "absmax",
    "nan_count", "inf_count", "kurtosis", "over6_count", "massive_count", "top_channels",
]  # fmt: skip


def test_stitch_npy_layout(synth_dump, workspace_dir: Path, tmp_path: Path, capsys) -> None:
    session, truth, _ = synth_dump(4)
    out = tmp_path / "npy"
    assert main(["stitch", str(session), "--out", str(out), "--format", "npy"]) == 0
    qkv = truth[(1, "model.layers.0.self_attn.qkv_proj", "output", 0)]
    d = out / "step1" / "layers.0.self_attn.qkv_proj"
    np.testing.assert_array_equal(np.load(d / "output.npy"), qkv)
    np.testing.assert_array_equal(np.load(d / "output.q.npy"), qkv[:, :16])
    np.testing.assert_array_equal(np.load(d / "output.k.npy"), qkv[:, 16:24])
    np.testing.assert_array_equal(np.load(d / "output.v.npy"), qkv[:, 24:])
    gu = truth[(0, "model.layers.0.mlp.gate_up_proj", "output", 0)]
    g = out / "step0" / "layers.0.mlp.gate_up_proj"
    np.testing.assert_array_equal(np.load(g / "output.gate.npy"), gu[:, :8])
    np.testing.assert_array_equal(np.load(g / "output.up.npy"), gu[:, 8:])
    np.testing.assert_array_equal(
        np.load(out / "step0" / "layers.1.mlp.experts" / "output.npy"),
        truth[(0, "model.layers.1.mlp.experts", "output", 0)],
    )
    assert np.load(d / "input.npy").dtype == np.float32
    assert "verified" in capsys.readouterr().out

    flat = tmp_path / "flat"
    assert (
        main(
            [
                "stitch",
                str(session),
                "--out",
                str(flat),
                "--format",
                "npy",
                "--steps",
                "0",
                "--flat",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        np.load(flat / "layers.0.self_attn.o_proj" / "input.npy"),
        truth[(0, "model.layers.0.self_attn.o_proj", "input", 0)],
    )
    assert not (flat / "step0").exists()
    assert main(["stitch", str(session), "--out", str(flat), "--flat"]) == 2
    assert "--flat writes one step" in capsys.readouterr().err


def test_stats_json(synth_dump, workspace_dir: Path, capsys) -> None:
    session, truth, _ = synth_dump(2, outlier=900.0)
    assert (
        main(
            [
                "stats",
                str(session),
                "--json",
                "--module",
                r"layers\.1\.input_layernorm$",
                "--step",
                "0",
            ]
        )
        == 0
    )
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["io"], r["rank"]) for r in recs] == [("input", "stitched"), ("output", "stitched")]
    assert list(recs[0]) == FIELDS
    x = truth[(0, "model.layers.1.input_layernorm", "input", 0)].astype(np.float64)
    r = recs[0]
    assert r["shape"] == list(x.shape) and r["dtype"] == "float32"
    assert (r["token_axis"], r["tokens"], r["channels"]) == ("[tokens, hidden]", *x.shape)
    assert (
        r["absmax"] == 900.0
        and r["massive_count"] == 1
        and r["over6_count"] == int((abs(x) > 6).sum())
    )
    assert r["std"] == pytest.approx(x.std(), rel=1e-6)  # float32 residuals
    assert r["top_channels"][0] == {"channel": 3, "absmax": 900.0}
    # the run id names the same stored statistics (see `studio runs`)
    assert main(["runs", "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    args = ["--json", "--module", r"layers\.1\.input_layernorm$", "--step", "0"]
    assert main(["stats", run["run_id"], *args]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == recs
    assert main(["stats", "no-such-run", "--json"]) == 2
    assert "neither a run id of this workspace nor a dump directory" in capsys.readouterr().err
    assert (
        main(["stats", str(session), "--json", "--step", "0", "--module", "qkv_proj$", "--ranks"])
        == 0
    )
    ranks = [json.loads(line)["rank"] for line in capsys.readouterr().out.splitlines()]
    # two layers x (input, output, q, k, v) stitched; two layers x 2 io per rank
    assert ranks.count("stitched") == 10 and sorted(x for x in ranks if x != "stitched") == [
        0,
        0,
        0,
        0,
        1,
        1,
        1,
        1,
    ]


def test_ingest_cli_and_bad_args(synth_dump, workspace_dir: Path, tmp_path: Path, capsys) -> None:
    session, _, _ = synth_dump(2)
    assert main(["ingest", str(session / "torch_tensors")]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["ingest", str(session), "--model-config", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert main(["stats", str(tmp_path), "--json"]) == 2


def test_ingest_watch_in_process_leaves_signal_handlers_as_found(
    synth_dump, workspace_dir: Path, capsys
) -> None:
    """`ingest --watch` handles Ctrl-C / SIGTERM itself; run in-process (as here) it must hand
    the process's handlers back: a left-over handler changes how every later test's children and
    signals behave in a pytest worker."""
    import signal

    from studio_backend.dumps import query
    from studio_backend.workspace import open_workspace

    session, _, _ = synth_dump(2)
    sigs = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)
    before = {s: signal.getsignal(s) for s in sigs}
    assert main(["ingest", str(session), "--watch", "--idle-exit", "0.5", "--no-stats"]) == 0
    assert {s: signal.getsignal(s) for s in sigs} == before
    assert "verified" in capsys.readouterr().out
    ws = open_workspace(workspace_dir)
    try:
        assert len(query.list_runs(ws)) == 1  # it did watch and ingest the dump
    finally:
        ws.close()


def test_pack_makes_stitched_tensors_independent_of_the_dump(
    synth_dump, workspace_dir: Path, capsys
) -> None:
    from studio_backend.dumps import query
    from studio_backend.workspace import open_workspace

    session, truth, _ = synth_dump(2)
    assert main(["pack", str(session)]) == 2  # not ingested yet
    assert "has not been ingested" in capsys.readouterr().err
    assert main(["ingest", str(session), "--no-stats"]) == 0
    assert main(["pack", str(session)]) == 0
    out = capsys.readouterr().out
    assert "copied" in out and " 0 tensor(s)" not in out
    assert main(["pack", str(session)]) == 0  # nothing left to copy
    assert "copied 0 tensor(s)" in capsys.readouterr().out
    session.rename(session.with_name("moved_away"))  # the dump is gone
    ws = open_workspace(workspace_dir)
    try:
        (run,) = [r for r in query.list_runs(ws).run_id]
        df = query.find_tensors(ws, run)
        whole = df[df.part.isna()]
        assert whole.source_file.isna().all() and whole.store_group.notna().all()
        for key, arr in truth.items():
            step, module, io, idx = key
            if io == "_partials" or arr is None:
                continue
            row = whole[(whole.step == step) & (whole.module == module) & (whole.io == io)
                        & (whole.idx == idx)]  # fmt: skip
            got = query.load_tensor(ws, int(row.tensor_id.iloc[0]))
            np.testing.assert_array_equal(got.numpy(), arr, err_msg=str(key))
    finally:
        ws.close()


def test_stitch_never_writes_a_failed_tensor(workspace_dir: Path, tmp_path: Path, capsys) -> None:
    """vLLM 0.32 layout, rank 1's o_proj output broken: `studio stitch` writes every other
    tensor (the already-reduced experts output as it is, not summed) and says what it left out."""
    from studio_backend.dumps import synthetic_vllm as V
    from studio_backend.dumps.synthetic import SynthConfig

    cfg = SynthConfig(layers=3, dense_layers=(0,))
    truth = V.make_truth(cfg, [4], seed=5)
    bad = (0, "model.layers.1.self_attn.o_proj", "output", 0)
    session = V.write_msit(tmp_path / "v", cfg, truth, 2, tamper={bad: 0.25})
    out = tmp_path / "npy"
    assert main(["stitch", str(session), "--out", str(out)]) == 1  # exported, problems reported
    printed = capsys.readouterr().out
    assert "failed 1" in printed and "1 tensor(s) failed or unknown" in printed
    assert "3 shared module(s) flagged" in printed  # rotary_emb, 2 x GateLinear
    d = out / "step0"
    assert not (d / "layers.1.self_attn.o_proj" / "output.npy").exists()
    np.testing.assert_array_equal(
        np.load(d / "layers.1.self_attn.o_proj" / "input.npy"),
        truth[(0, "model.layers.1.self_attn.o_proj", "input", 0)],
    )
    np.testing.assert_array_equal(
        np.load(d / "layers.2.mlp.experts" / "output.npy"),
        truth[(0, "model.layers.2.mlp.experts", "output", 0)],
    )
