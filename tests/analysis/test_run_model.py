"""The tokenizer folder known for a run (studio_backend/analysis/run_model.py).

Oracles: the folder ``studio demo`` made its model in (``demo_model``), and the folders the
tests themselves record in ``launches`` / ``captures`` / config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio_backend.analysis.run_model import tokenizer_dir
from studio_backend.dumps.ingest import ingest_dump
from studio_backend.dumps.launch_record import launch_tp_for
from studio_backend.engines.demo import DEMO_MODEL
from studio_backend.models.tokenizer import write_tokenizer
from studio_backend.workspace import open_workspace
from tests.analysis.dumpdata import write_dump


def test_demo_run_is_known_to_come_from_the_demo_model(demo_workspace: Path) -> None:
    ws = open_workspace(demo_workspace, read_only=True)
    try:
        runs = dict(ws.cursor().execute("SELECT name, run_id FROM dump_runs").fetchall())
        roots = dict(ws.cursor().execute("SELECT name, root FROM dump_runs").fetchall())
        expected = str((demo_workspace / "models" / DEMO_MODEL).resolve())
        assert tokenizer_dir(ws, runs["demo"]) == expected
        assert (Path(expected) / "tokenizer.json").is_file()
        # The tp=1 reference run (no server, so no launch): its stored config names the model.
        assert tokenizer_dir(ws, runs["demo tp=1 (reference)"]) == expected
        # The demo's launch record names only its own dump folder: the tp=1 reference dump
        # beside it gets no tp=2 evidence from it.
        tp, why = launch_tp_for(ws, roots["demo"])
        assert tp == 2 and why.startswith("launch L")
        assert launch_tp_for(ws, roots["demo tp=1 (reference)"]) is None
        capture = ws.cursor().execute("SELECT status, prompt_tokens FROM captures").fetchall()
        assert capture == [("ingested", 174)]
    finally:
        ws.close()


def _launch(ws, launch_id: str, model_dir: Path, dump_path: Path | None) -> None:  # noqa: ANN001
    """A launches row as the supervisor writes it (only the columns this lookup reads vary)."""
    ws.cursor().execute(
        "INSERT INTO launches (launch_id, engine, model_dir, host, port, tp, spec, argv, env,"
        " dump_path, log_path, status) VALUES (?, 'vllm', ?, '127.0.0.1', 8017, 1, '{}', '[]',"
        " '{}', ?, 'log', 'stopped')",
        [launch_id, str(model_dir), str(dump_path) if dump_path else None],
    )


def _model(path: Path, tokenizer: bool) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    if tokenizer:
        write_tokenizer(path, 512)
    return path


@pytest.fixture
def ingested(tmp_path: Path):
    """A workspace with one ingested dump whose config.json names no model folder."""
    session, _ = write_dump(tmp_path / "dumps", tokens=8, kronecker=False)
    ws = open_workspace(tmp_path / "ws")
    run_id = ingest_dump(ws, session, model_config={"num_hidden_layers": 3})
    yield ws, run_id, session
    ws.close()


def test_launch_whose_dump_folder_holds_the_run(ingested, tmp_path: Path) -> None:
    ws, run_id, session = ingested
    model = _model(tmp_path / "models" / "served", tokenizer=True)
    _launch(ws, "L1", model, session.parent)  # the launch's dump folder holds the session
    assert tokenizer_dir(ws, run_id) == str(model.resolve())


def test_capture_names_the_run(ingested, tmp_path: Path) -> None:
    ws, run_id, _ = ingested
    _launch(ws, "L1", _model(tmp_path / "other", tokenizer=True), tmp_path / "elsewhere")
    model = _model(tmp_path / "models" / "captured", tokenizer=True)
    _launch(ws, "L2", model, None)
    ws.cursor().execute(
        "INSERT INTO captures (capture_id, launch_id, source, prompt_tokens, max_tokens,"
        " run_id, status) VALUES ('C1', 'L2', 'pasted text', 8, 1, ?, 'ingested')",
        [run_id],
    )
    assert tokenizer_dir(ws, run_id) == str(model.resolve())


def test_recorded_folder_without_tokenizer_json_gives_none(ingested, tmp_path: Path) -> None:
    ws, run_id, session = ingested
    assert tokenizer_dir(ws, run_id) is None  # nothing recorded
    _launch(ws, "L1", _model(tmp_path / "models" / "weights-only", tokenizer=False), session)
    assert tokenizer_dir(ws, run_id) is None


def test_config_name_or_path(tmp_path: Path) -> None:
    model = _model(tmp_path / "hf" / "model", tokenizer=True)
    session, _ = write_dump(tmp_path / "dumps", tokens=8, kronecker=False)
    ws = open_workspace(tmp_path / "ws")
    try:
        # Through a symlink: the answer is the resolved folder.
        (tmp_path / "link").symlink_to(model)
        cfg = {"num_hidden_layers": 3, "_name_or_path": str(tmp_path / "link")}
        run_id = ingest_dump(ws, session, model_config=cfg)
        # A launch whose model has no tokenizer does not hide the config's folder.
        _launch(ws, "L1", _model(tmp_path / "weights-only", tokenizer=False), session)
        assert tokenizer_dir(ws, run_id) == str(model.resolve())
        assert json.loads((model / "config.json").read_text()) == {}
    finally:
        ws.close()
