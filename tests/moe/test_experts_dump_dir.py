"""`studio experts DUMP_DIR`: a dump folder (as `stats` and `stitch` take) is ingested if
needed and its router logits routed; counts equal a numpy top-k of the dumped logits."""

from __future__ import annotations

import json

import numpy as np

from backend.cli import main
from backend.dumps import synthetic


def _numpy_counts(logits: np.ndarray, k: int) -> np.ndarray:
    x = logits.astype(np.float64)
    p = np.exp(x - x.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    top = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    return np.bincount(top.ravel(), minlength=logits.shape[-1])


def test_experts_takes_a_dump_folder(tmp_path, workspace_dir, capsys) -> None:
    cfg = synthetic.SynthConfig(layers=3, experts=6, dense_layers=(0,))
    truth = synthetic.make_truth(cfg, tokens=[7, 1, 1], seed=5)
    root = synthetic.write_msit(tmp_path / "dump", cfg, truth, tp=2)
    ws = ["--workspace", str(workspace_dir)]
    assert main(["experts", str(root), "--top-k", "2", "--json", *ws]) == 0
    out = json.loads(capsys.readouterr().out)["sources"]
    assert len(out) == 1 and out[0]["kind"] == "dump" and out[0]["num_experts"] == 6
    assert out[0]["source"].startswith("dump-run-") and out[0]["top_k"] == 2
    assert out[0]["num_devices"] == 2  # EP over the 2 TP ranks that dumped
    counts = out[0]["counts"]
    for step in range(3):
        for layer in (1, 2):
            want = _numpy_counts(truth[(step, f"model.layers.{layer}.mlp.gate", "output", 0)], 2)
            got = sorted((c["expert"], c["count"]) for c in counts
                         if c["step"] == step and c["layer"] == layer)  # fmt: skip
            assert [n for _, n in got] == want.tolist()
    # again, from a folder inside the dump: the same run and source, nothing imported twice
    inner = next((root / "torch_tensors").iterdir()) / "0"
    assert main(["experts", str(inner), "--json", *ws]) == 0
    again = json.loads(capsys.readouterr().out)["sources"]
    assert [s["source"] for s in again] == [out[0]["source"]]
    assert again[0]["counts"] == counts
    assert main(["experts", "--json", out[0]["source"], *ws]) == 0  # the stored name too
    capsys.readouterr()


def test_experts_dump_without_top_k_and_non_dump_folder(tmp_path, workspace_dir, capsys) -> None:
    cfg = synthetic.SynthConfig(layers=2, experts=6, dense_layers=(0,))
    root = synthetic.write_msit(tmp_path / "dump", cfg, synthetic.make_truth(cfg, [3]), tp=1)
    assert main(["experts", str(root), "--workspace", str(workspace_dir)]) == 2
    err = capsys.readouterr().err
    assert "has no num_experts_per_tok in its config: give the top-k explicitly" in err
    empty = tmp_path / "nothing"
    empty.mkdir()
    assert main(["experts", str(empty), "--workspace", str(workspace_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"studio experts: {empty}") and "Traceback" not in err
