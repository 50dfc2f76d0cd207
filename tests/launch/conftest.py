"""Fixtures for launch tests: a tiny model directory, free ports, the stand-in server command."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from studio_backend.launch.commands import Command

STANDIN = Path(__file__).with_name("standin_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def standin(port: int, *extra: str) -> Command:
    return Command(argv=[sys.executable, str(STANDIN), "--port", str(port), *extra])


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


@pytest.fixture
def tokenized_model(model_dir: Path) -> Path:
    """The model directory with a small word-level tokenizer (w0 ... w199)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(200)} | {"[UNK]": 200}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(model_dir)
    return model_dir


def kill_groups(pgids: list[int]) -> None:
    """SIGKILL process groups a test started (only those), so a failing test leaves nothing."""
    import os
    import signal

    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(autouse=True)
def _no_leftover_servers(monkeypatch: pytest.MonkeyPatch):
    """Every server started through Supervisor.start in a test is killed at teardown."""
    from studio_backend.launch.supervisor import Supervisor

    started: list[int] = []
    original = Supervisor.start

    def start(self, *args, **kwargs):
        launch = original(self, *args, **kwargs)
        started.append(launch.pgid)
        return launch

    monkeypatch.setattr(Supervisor, "start", start)
    yield
    kill_groups(started)
