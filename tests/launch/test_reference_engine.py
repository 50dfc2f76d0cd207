"""The whole CLI flow against the real reference engine: launch tp=2 with msit, capture, ingest, stop.

Oracle: the served greedy completion equals the offline engine's generation for the same
truncated prompt (``run_offline``, tp=1, no dumps)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from studio_backend.cli import main
from studio_backend.launch import procs
from studio_backend.launch.capture import truncate
from studio_backend.workspace import open_workspace
from tests.launch.conftest import free_port, kill_groups

TEXT = "Tensor parallel inference splits every matrix across ranks and stitches the results. " * 8


def test_cli_launch_capture_ingest_stop(workspace_dir: Path, tmp_path: Path, capsys) -> None:
    from transformers import AutoTokenizer

    from studio_backend.engines.reference.offline import run_offline
    from studio_backend.models.create import create_model

    model = create_model(tmp_path / "tiny", preset="tiny", layers=2, seed=0)
    port = free_port()
    rc = main([
        "launch", "--engine", "reference", "--model", str(model), "--tp", "2", "--port", str(port),
        "--dump-tool", "msit", "--dump-path", str(tmp_path / "dump"), "--token-range", "0:3",
        "--wait", "240",
    ])  # fmt: skip
    out = capsys.readouterr().out
    launch_id = re.search(r"launch (L[\w-]+): PID (\d+)", out)
    assert rc == 0 and launch_id, out
    pgid = int(launch_id.group(2))
    try:
        assert f"ready at http://127.0.0.1:{port}" in out
        assert main(["capture", "--text", TEXT, "--tokens", "12", "--max-tokens", "3"]) == 0
        out = capsys.readouterr().out
        assert "12 tokens sent" in out
        run_id = re.search(r"ingested as run (\S+)", out).group(1)

        ws = open_workspace(workspace_dir)
        row = (
            ws.cursor()
            .execute("SELECT completion, prompt_tokens, status, run_id FROM captures")
            .fetchone()
        )
        stitched = (
            ws.cursor()
            .execute(
                "SELECT count(DISTINCT module), count(DISTINCT step) FROM dump_tensors WHERE run_id = ? AND rank IS NULL",
                [run_id],
            )
            .fetchone()
        )
        ws.close()
        assert row[1:] == (12, "ingested", run_id)
        assert stitched[0] > 10 and stitched[1] == 3  # steps 0..2 = prefill + 2 decodes

        prompt, n = truncate(model, TEXT, 12)
        offline = run_offline(model, tp=1, prompts=[prompt], max_tokens=3)
        tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
        assert row[0] == tok.decode(offline.tokens[0])

        assert main(["launches", "--stop", launch_id.group(1)]) == 0
        assert f"{launch_id.group(1)} stopped" in capsys.readouterr().out
        assert procs.group_members(pgid) == []
        assert main(["launches", "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert rows[0]["status"] == "stopped"
    finally:
        kill_groups([pgid])
