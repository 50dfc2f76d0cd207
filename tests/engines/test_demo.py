"""``studio demo``: a real tp=2 msit dump of the bundled text, left in the workspace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backend.cli import main
from backend.engines.demo import DEMO_MODEL

pytest.importorskip("msit_llm")


@pytest.mark.slow
def test_demo_leaves_dump_in_workspace(workspace_dir: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--workspace", str(workspace_dir), "demo"]) == 0
    out = capsys.readouterr().out
    assert "[100%] Dump written to" in out
    roots = list((workspace_dir / "dumps").glob("msit_dump_*"))
    assert len(roots) == 1
    root = roots[0]
    ranks = json.loads((root / "ranks.json").read_text())
    assert sorted(ranks.values()) == [0, 1]
    info = json.loads((workspace_dir / "models" / DEMO_MODEL / "studio_model.json").read_text())
    channels = info["outliers"]["channels"]
    for folder in ranks:
        rank_dir = root / "torch_tensors" / folder
        assert sorted(p.name for p in rank_dir.iterdir()) == ["0", "1", "2", "3", "model_tree.json"]
        emb = torch.load(rank_dir / "0/root.model.embed_tokens/output.pth", weights_only=True)
        # The planted massive activations are really in the dumped hidden states.
        assert emb.abs().amax(dim=0).topk(2).indices.sort().values.tolist() == channels
        assert emb[:, channels].abs().min() > 100 * emb.abs().median()
