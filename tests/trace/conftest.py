"""Real torch.profiler traces of the tiny decoder, made once per test session on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studio_backend.trace.profile_run import profile_call
from tests.trace.tiny import TinyDecoder


def make_cpu_trace(out: Path, layers: int = 2, tokens: int = 7, with_stack: bool = True):
    model = TinyDecoder(layers)
    ids = torch.arange(tokens).unsqueeze(0)
    return profile_call(model, lambda: model(ids), out, with_stack=with_stack, cuda=False)


@pytest.fixture(scope="session")
def cpu_trace(tmp_path_factory: pytest.TempPathFactory):
    """(trace path, module tracer) of one forward of a 2-layer TinyDecoder, 7 tokens."""
    return make_cpu_trace(tmp_path_factory.mktemp("kineto") / "tiny.pt.trace.json")
