"""Capture followed by ingest: the dump a (stand-in) server writes is stitched into the workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from studio_backend.dumps.query import find_tensors, list_runs, load_tensor
from studio_backend.dumps.synthetic import SynthConfig, make_truth, truth_key_map
from studio_backend.launch import ingest
from studio_backend.launch.capture import capture, list_captures
from studio_backend.launch.spec import DumpSettings, LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from tests.launch.conftest import free_port, standin


def test_capture_then_ingest_stitches_tp2(workspace, tokenized_model: Path, tmp_path: Path) -> None:
    cfg = SynthConfig()
    (tokenized_model / "config.json").write_text(json.dumps(cfg.hf_config()))
    dump = tmp_path / "dump"
    sup = Supervisor(workspace, poll_s=0.1)
    port = free_port()
    spec = LaunchSpec("reference", str(tokenized_model), tp=2, port=port,
                      dump=DumpSettings(tool="msit", dump_path=str(dump)))  # fmt: skip
    launch = sup.start(
        spec, command=standin(port, "--dump-dir", str(dump), "--synthetic-msit-tp", "2")
    )
    launch = sup.wait_status(launch.launch_id, ("ready",), 30)
    result = capture(workspace, launch, text="w1 w2 w3", n_tokens=3, max_tokens=2)
    assert result.dump_roots == [str(dump / "msit_dump_20261123_010000")]

    seen: list[dict] = []
    run_ids = ingest.ingest_capture(
        workspace, result.capture_id, on_progress=lambda p: seen.append(p.as_dict())
    )
    assert len(run_ids) == 1
    assert seen and seen[-1]["files_done"] > 0
    runs = list_runs(workspace)
    assert list(runs["run_id"]) == run_ids
    row = list_captures(workspace, launch.launch_id)[0]
    assert (row["status"], row["run_id"]) == ("ingested", run_ids[0])

    prog = ingest.progress(workspace, result.capture_id)
    stitched = find_tensors(workspace, run_ids[0], stitched=True)
    assert prog["stitched_modules"] == stitched["module"].nunique() > 0
    # The stitched tensors are the unsharded truth the stand-in's dump was sharded from.
    truth = truth_key_map(make_truth(cfg, [5, 1], seed=0))  # 5 prefill tokens, 1 decode
    checked = 0
    for t in stitched.itertuples():
        key = (t.step, t.module, t.io, t.idx)
        if not isinstance(t.part, str) and key in truth:  # whole tensors (parts are NaN)
            np.testing.assert_allclose(
                load_tensor(workspace, t.tensor_id).float().numpy(),
                truth[key],
                rtol=1e-6,
                atol=1e-6,
            )
            checked += 1
    assert checked >= 4
    sup.stop(launch.launch_id)
    sup.close()
