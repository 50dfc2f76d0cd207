"""Streaming ingest while a writer is still producing the dump; restart without loss or duplicates."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import torch

from studio_backend.dumps import query
from studio_backend.dumps import synthetic as S
from studio_backend.dumps.watch import DumpWatcher


def _slow_writer(root: Path, cfg, truth, tp: int, items: slice | None = None, pause: float = 0.002):
    """Write an msit dump file by file, each file in two chunks (a reader may see it half-done)."""
    tt = root / "msit_dump_20261123_020000" / "torch_tensors"
    everything = list(S.rank_tensors(cfg, truth, tp, torch.float32, 1))
    for step, module, io_, idx, r, t in everything[items or slice(None)]:
        d = tt / f"npu{r}_{4000 + r}" / str(step) / f"root.{module}"
        d.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(t, buf)
        data = buf.getvalue()
        name = f"{io_}.pth" if idx == 0 and io_ == "output" else f"{io_}_{idx}.pth"
        with (d / name).open("wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(pause)
            f.write(data[len(data) // 2 :])
    (tt.parent / "config.json").write_text(json.dumps(cfg.hf_config()))
    return len(everything)


def _assert_matches_truth(ws, run, truth) -> None:
    df = query.find_tensors(ws, run)
    whole = df[df.part.isna()]
    keys = [(k, v) for k, v in truth.items() if v is not None]
    assert len(whole) == len(keys)
    for (step, module, io_, idx), arr in keys:
        row = whole[
            (whole.step == step) & (whole.module == module) & (whole.io == io_) & (whole.idx == idx)
        ]
        assert len(row) == 1, (step, module, io_, idx)
        np.testing.assert_array_equal(
            query.load_tensor(ws, int(row.tensor_id.iloc[0])).numpy(), arr
        )


def _counts(ws, run) -> tuple[int, ...]:
    return (
        ws.cursor()
        .execute(
            "SELECT (SELECT count(*) FROM dump_tensors WHERE run_id = $r AND rank IS NOT NULL),"
            " (SELECT count(DISTINCT source_file) FROM dump_tensors WHERE run_id = $r AND rank IS NOT NULL),"
            " (SELECT count(*) FROM dump_ingest_files WHERE run_id = $r),"
            " (SELECT count(*) FROM dump_ingest_errors WHERE run_id = $r)",
            {"r": run},
        )
        .fetchone()
    )


def test_ingest_while_written(tmp_path: Path, workspace) -> None:
    cfg = S.SynthConfig(layers=2)
    truth = S.make_truth(cfg, [6, 1, 1], seed=2)
    dump = tmp_path / "dump"
    dump.mkdir()
    # config.json must exist for the QKV split: the engine writes it before the first step
    w = DumpWatcher(
        workspace, dump, model_config=cfg.hf_config(), stable_s=0.05, poll_s=0.02
    ).start()
    writer = threading.Thread(target=_slow_writer, args=(dump, cfg, truth, 2))
    writer.start()
    seen_midway = False
    while writer.is_alive():
        time.sleep(0.05)
        if w.run_id and len(query.find_tensors(workspace, w.run_id)) > 0:
            seen_midway = True  # stitched tensors are viewable before the dump is complete
    writer.join()
    w.stop(finish=True)
    assert seen_midway and w.error is None
    n_rank, n_files, n_records, n_errors = _counts(workspace, w.run_id)
    assert n_rank == n_files == n_records == sum(1 for _ in dump.rglob("*.pth"))
    assert n_errors == 0
    _assert_matches_truth(workspace, w.run_id, truth)
    assert w.progress.latencies_s and w.progress.stats_done > 0


def test_restart_resumes_without_loss_or_duplicates(tmp_path: Path, workspace) -> None:
    cfg = S.SynthConfig(layers=2)
    truth = S.make_truth(cfg, [4, 1], seed=4)
    dump = tmp_path / "dump"
    dump.mkdir()
    total = len(list(S.rank_tensors(cfg, dict(truth), 2, torch.float32, 1)))
    w1 = DumpWatcher(
        workspace, dump, model_config=cfg.hf_config(), stable_s=0.05, poll_s=0.02
    ).start()
    _slow_writer(dump, cfg, truth, 2, slice(0, total // 2), pause=0)
    time.sleep(1.0)
    w1.stop(finish=False)  # as if the studio died mid-dump
    run = w1.run_id
    first = _counts(workspace, run)[0]
    assert 0 < first <= total // 2
    _slow_writer(dump, cfg, truth, 2, slice(total // 2, None), pause=0)
    w2 = DumpWatcher(
        workspace, dump, model_config=cfg.hf_config(), stable_s=0.05, poll_s=0.02
    ).start()
    time.sleep(0.5)
    w2.stop(finish=True)
    assert w2.run_id == run
    assert _counts(workspace, run) == (total, total, total, 0)
    _assert_matches_truth(workspace, run, truth)
