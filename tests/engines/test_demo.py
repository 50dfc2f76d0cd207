"""``studio demo``: a real tp=2 msit dump of the bundled text, plus every page's data.

Oracles: numpy on the dumped tensor files (the residual stream, the router logits), not the
workspace's own statistics.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from studio_backend.cli import main
from studio_backend.engines.demo import DEMO_MODEL, demo_prompt
from studio_backend.models.tokenizer import load_tokenizer

pytest.importorskip("msit_llm")

TABLES = ("dump_tensors", "moe_counts", "dsa_steps", "profile_events", "trace_calls")


def _load(path: Path) -> np.ndarray:
    return torch.load(path, weights_only=True).float().numpy()


def _top_k_counts(logits: np.ndarray, k: int, n: int) -> np.ndarray:
    return np.bincount(np.argsort(-logits, axis=1)[:, :k].ravel(), minlength=n)


@pytest.mark.slow
def test_demo_fills_every_page_with_a_realistic_model(
    workspace_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["--workspace", str(workspace_dir), "demo"]) == 0
    out = capsys.readouterr().out
    assert "[100%] Demo done" in out and "Every page has data now" in out
    (root,) = list((workspace_dir / "dumps").glob("msit_dump_*"))
    ranks = json.loads((root / "ranks.json").read_text())
    assert sorted(ranks.values()) == [0, 1]
    model_dir = workspace_dir / "models" / DEMO_MODEL
    info = json.loads((model_dir / "studio_model.json").read_text())["outliers"]
    cfg = json.loads((model_dir / "config.json").read_text())
    channels = info["channels"]
    ids = load_tokenizer(model_dir).encode(demo_prompt()).ids
    massive = [i for i, t in enumerate(ids) if str(t) in info["tokens"]]
    assert massive[0] == 0 and len(massive) >= 3  # the start token and the delimiters
    ordinary = np.setdiff1d(np.arange(len(ids)), massive)
    folder = next(f for f, r in ranks.items() if r == 0)
    step0 = root / "torch_tensors" / folder / "0"
    for name in ranks:
        assert sorted(p.name for p in (root / "torch_tensors" / name).iterdir()) == [
            "0", "1", "2", "3", "model_tree.json",
        ]  # fmt: skip

    # The residual stream: embedding output, then hidden + residual after every layer (vLLM
    # returns them apart and adds them in the next norm).
    streams = [_load(step0 / "root.model.embed_tokens/output.pth")]
    for i in range(cfg["num_hidden_layers"]):
        layer = step0 / f"root.model.layers.{i}"
        streams.append(_load(layer / "output_0.pth") + _load(layer / "output_1.pth"))
    first = None
    for x in streams:
        assert x.shape == (len(ids), cfg["hidden_size"])
        norms = np.linalg.norm(x[ordinary], axis=1)
        assert norms.std() / norms.mean() > 0.2  # varies along the tokens
        absx = np.abs(x)
        # Sun et al.: |x| > 100 and > 1000x the median, only at those tokens and channels
        assert sorted(np.nonzero(absx.max(axis=1) > 100)[0].tolist()) == massive
        for t in massive:
            assert sorted(np.argsort(-absx[t])[:2].tolist()) == channels
        big = x[np.ix_(massive, channels)]
        assert np.abs(big).min() > 100 and np.abs(big).min() > 1000 * np.median(absx)
        first = big if first is None else first
        np.testing.assert_allclose(big, first, rtol=0.02)  # roughly constant across layers

    # The Compare page's reference: the same request at tp=1, dumped apart; its residual stream
    # is the tp=2 one (the tp=2 ranks hold it replicated), so the page compares like with like.
    (ref,) = list((workspace_dir / "dumps" / "demo-tp1").glob("msit_dump_*"))
    assert sorted(json.loads((ref / "ranks.json").read_text()).values()) == [0]
    (ref_folder,) = [p for p in (ref / "torch_tensors").iterdir() if p.is_dir()]
    ref0 = ref_folder / "0"
    np.testing.assert_allclose(
        _load(ref0 / "root.model.embed_tokens/output.pth"), streams[0], rtol=0, atol=0
    )
    for i in range(cfg["num_hidden_layers"]):
        layer = ref0 / f"root.model.layers.{i}"
        x = _load(layer / "output_0.pth") + _load(layer / "output_1.pth")
        np.testing.assert_allclose(x, streams[i + 1], rtol=1e-4, atol=1e-4 * np.abs(x).max())

    # Expert load: numpy top-k of every dumped router logit tensor (all steps) is what the
    # workspace stored, spread over >= 75% of the experts and neither even nor on one device.
    from studio_backend.moe import store
    from studio_backend.workspace import open_workspace

    e, k = cfg["num_experts"], cfg["num_experts_per_tok"]
    moe_layers = [i for i in range(cfg["num_hidden_layers"]) if i not in cfg["mlp_only_layers"]]
    expected = np.zeros((len(moe_layers), e), dtype=np.int64)
    for step in range(4):
        base = root / "torch_tensors" / folder / str(step)
        for j, i in enumerate(moe_layers):
            logits = _load(base / f"root.model.layers.{i}.mlp.experts.gate/output_0.pth")
            expected[j] += _top_k_counts(logits, k, e)
    for counts in expected:
        assert (counts > 0).sum() >= 0.75 * e
        dev = counts.reshape(2, e // 2).sum(axis=1)  # EP over the two ranks, contiguous
        assert 0 < dev.mean() / dev.max() < 1
    ws = open_workspace(workspace_dir)
    try:
        (source,) = store.sources(ws)["source"].tolist()
        agg = store.aggregate(ws, source)
        np.testing.assert_array_equal(agg.expert_load, expected)
        dev = expected.reshape(len(moe_layers), 2, e // 2).sum(axis=2)
        np.testing.assert_allclose(agg.table["balancedness"], dev.mean(1) / dev.max(1))
        cur = ws.cursor()
        runs = cur.execute("SELECT name, tp_size FROM dump_runs ORDER BY created_at").fetchall()
        assert runs == [("demo tp=1 (reference)", 1), ("demo", 2)]  # Compare: A, then B
        for table in TABLES:
            assert cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0, table  # noqa: S608
        assert cur.execute("SELECT count(*) FROM trace_runs").fetchone()[0] == 2  # one per rank
        # module trace: every decoder layer's attention and MLP, on both ranks
        for r in (0, 1):
            traced = {m for (m,) in cur.execute(
                "SELECT DISTINCT module FROM trace_calls WHERE rank = ?", [r]).fetchall()}  # fmt: skip
            for i in range(cfg["num_hidden_layers"]):
                assert {f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"} <= traced
        # DSA: the table holds every line of the trace file the run wrote
        ((path,),) = cur.execute("SELECT path FROM dsa_traces").fetchall()
        lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
        stored = cur.execute("SELECT request_id, layer_id, step_idx FROM dsa_steps").fetchall()
        assert sorted(stored) == sorted(
            (x["request_id"], x["layer_id"], x["step_idx"]) for x in lines
        )
        assert {x["layer_id"] for x in lines} == set(range(cfg["num_hidden_layers"]))
        # profile: kernels attributed to every layer
        layers = {
            n for (n,) in cur.execute("SELECT DISTINCT layer FROM profile_attribution").fetchall()
        }
        assert set(range(cfg["num_hidden_layers"])) <= layers
    finally:
        ws.close()
