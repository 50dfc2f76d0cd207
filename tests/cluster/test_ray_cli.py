"""`studio ingest|stitch|stats --ray ADDRESS`: the same output as on one machine; clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from studio_backend.cli import main
from studio_backend.dumps import synthetic as S

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _session(tmp_path: Path) -> Path:
    cfg = S.SynthConfig()
    return S.write_msit(tmp_path / "dump", cfg, S.make_truth(cfg, [4, 3], seed=5), 4)


def test_stats_and_stitch_over_ray_equal_one_machine(ray_cluster, tmp_path: Path, capsys) -> None:
    pytest.importorskip("ray")
    session = _session(tmp_path)
    ray_ws, one_ws = str(tmp_path / "ws-ray"), str(tmp_path / "ws-one")
    assert main(["ingest", str(session), "--ray", ray_cluster.address, "--workspace", ray_ws]) == 0
    assert "verified" in capsys.readouterr().out
    assert main(["stats", str(session), "--json", "--ray", ray_cluster.address,
                 "--workspace", ray_ws]) == 0  # fmt: skip
    over_ray = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["stats", str(session), "--json", "--workspace", one_ws]) == 0
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert over_ray == local and local
    a, b = tmp_path / "npy-ray", tmp_path / "npy-one"
    assert main(["stitch", str(session), "--out", str(a), "--ray", ray_cluster.address,
                 "--workspace", ray_ws]) == 0  # fmt: skip
    assert main(["stitch", str(session), "--out", str(b), "--workspace", one_ws]) == 0
    files = sorted(p.relative_to(b) for p in b.rglob("*.npy"))
    assert files and files == sorted(p.relative_to(a) for p in a.rglob("*.npy"))
    for f in files:
        np.testing.assert_array_equal(np.load(a / f), np.load(b / f))


def test_ray_errors_are_one_clear_line(ray_cluster, tmp_path: Path, capsys) -> None:
    session = _session(tmp_path)
    ws = ["--workspace", str(tmp_path / "ws")]
    cases = [
        (["ingest", str(session), "--ray", ray_cluster.address, "--watch"], "--watch"),
        (["ingest", str(session), "--node-dump", "x=/d"], "needs --ray"),
        (["ingest", str(session), "--ray", ray_cluster.address, "--node-dump", "nope"],
         "NODE=PATH"),
        (["ingest", str(session), "--ray", ray_cluster.address, "--node-dump", "ffff=/d"],
         "no alive node 'ffff'"),
        (["ingest", str(tmp_path / "nothing"), "--ray", ray_cluster.address],
         "no node of the Ray cluster holds this dump"),
        (["stats", str(session), "--ray", "ray://10.0.0.1:10001"], "not supported"),
    ]  # fmt: skip
    for argv, want in cases:
        assert main(argv + ws) == 2, argv
        err = capsys.readouterr().err
        assert want in err and "Traceback" not in err, (argv, err)


def test_without_ray_installed_the_message_says_how(monkeypatch, tmp_path: Path, capsys) -> None:
    """No cluster needed: Ray missing from the venv is one line naming `make ray`."""
    monkeypatch.setitem(sys.modules, "ray", None)
    session = _session(tmp_path)
    argv = ["ingest", str(session), "--ray", "127.0.0.1:6379", "--workspace", str(tmp_path / "w")]
    assert main(argv) == 2
    assert "make ray" in capsys.readouterr().err


def test_a_node_lost_mid_ingest_exits_1_and_the_rerun_resumes(
    ray_cluster, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`studio ingest --ray`: node c dies after the first files are in -> exit 1, one line
    naming its rank folder and how to resume, no traceback; the same command with the node
    back gives exactly the workspace a one-machine ingest gives."""
    from studio_backend.dumps import cli as dumps_cli
    from studio_backend.workspace import open_workspace
    from tests.cluster.content import content, stitched

    session = _session(tmp_path)
    ws_dir = str(tmp_path / "ws-ray")
    argv = ["ingest", str(session), "--ray", ray_cluster.address, "--workspace", ws_dir]
    real_update, killed = dumps_cli._update, []

    def update_then_kill(bar, task, p) -> None:  # the CLI's progress callback
        real_update(bar, task, p)
        if not killed and p.files_done:
            killed.append(p.files_done)
            ray_cluster.kill("c")

    monkeypatch.setattr(dumps_cli, "_update", update_then_kill)
    try:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert killed and "npu3_4003" in err and "Traceback" not in err, err
        assert "again" in err  # says how to resume
    finally:
        ray_cluster.revive("c")
    monkeypatch.setattr(dumps_cli, "_update", real_update)
    assert main(argv) == 0, capsys.readouterr().err
    one_dir = str(tmp_path / "ws-one")
    assert main(["ingest", str(session), "--workspace", one_dir]) == 0
    ws, one = open_workspace(ws_dir), open_workspace(one_dir)
    try:
        ((run,),) = ws.cursor().execute("SELECT run_id FROM dump_runs").fetchall()
        a, b = content(ws, run), content(one, run)
        for table in a:
            assert a[table] == b[table], table
        sa, sb = stitched(ws, run), stitched(one, run)
        assert sa.keys() == sb.keys() and sa
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k], err_msg=str(k))
    finally:
        ws.close()
        one.close()
