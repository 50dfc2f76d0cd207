"""`studio experts DUMP_DIR`: a dump folder (as `stats` and `stitch` take) is ingested if
needed and its router logits routed; counts equal a numpy top-k of the dumped logits."""

from __future__ import annotations

import json

import numpy as np

from studio_backend.cli import main
from studio_backend.dumps import synthetic


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


def test_experts_on_a_real_msit_dump(tmp_path, workspace_dir, capsys) -> None:
    """A dump msit really wrote (reference engine, tp=1): `studio experts DUMP_DIR` routes the
    dumped router logits (top-k from the dump's config.json); counts equal numpy's."""
    import pytest

    pytest.importorskip("msit_llm")
    from studio_backend.dumps import query
    from studio_backend.engines.reference.dumping import DumpOptions
    from studio_backend.engines.reference.offline import run_offline
    from studio_backend.models.config import read_config
    from studio_backend.models.create import create_model
    from studio_backend.workspace import open_workspace

    model = create_model(tmp_path / "tiny", preset="tiny", seed=3)
    cfg = read_config(model)
    res = run_offline(model, tp=1, prompts=[[11, 57, 203, 9, 100]], max_tokens=2,
                      dump=DumpOptions(tool="msit", dump_path=tmp_path / "dump",
                                       token_range=[0, 1]))  # fmt: skip
    assert (
        main(["experts", str(tmp_path / "dump"), "--json", "--workspace", str(workspace_dir)]) == 0
    )
    src = json.loads(capsys.readouterr().out)["sources"][0]
    assert src["top_k"] == cfg.num_experts_per_tok and src["num_experts"] == cfg.num_experts
    ws = open_workspace(workspace_dir)
    try:
        run_id = src["source"].removeprefix("dump-")
        gates = query.find_tensors(ws, run_id, module_regex=r"mlp\.(experts\.)?gate$", io="output")
        checked = 0
        for r in gates[gates.idx == 0].itertuples():
            logits = query.load_tensor(ws, int(r.tensor_id)).float().numpy()
            want = _numpy_counts(logits, cfg.num_experts_per_tok)
            got = sorted((c["expert"], c["count"]) for c in src["counts"]
                         if c["step"] == r.step and c["layer"] == r.layer)  # fmt: skip
            assert [n for _, n in got] == want.tolist()
            checked += 1
    finally:
        ws.close()
    assert checked == len(cfg.moe_layers) * 2 and res.dump_root.is_dir()


def test_experts_on_an_sglang_hook_dump(tmp_path, workspace_dir, capsys) -> None:
    """SGLang's --debug-tensor-dump-output-folder layout (tests/dumps/sglang_docs_fixture.py,
    written from SGLang's documented structure): routed like any dump; per layer, the counts
    summed over all forwards equal numpy's top-k of the true router logits."""
    from tests.dumps.sglang_docs_fixture import write_hook_dump

    d = write_hook_dump(tmp_path / "sg", tp=2, passes=2)
    k = d["config"]["num_experts_per_tok"]
    assert main(["experts", str(d["dump_dir"]), "--json", "--workspace", str(workspace_dir)]) == 0
    src = json.loads(capsys.readouterr().out)["sources"][0]
    assert src["top_k"] == k and src["num_devices"] == 2
    want: dict[int, np.ndarray] = {}
    for key, t in d["truth"].items():
        if len(key) == 2 and key[1].endswith(".mlp.gate"):
            layer = int(key[1].split(".")[2])
            want[layer] = want.get(layer, 0) + _numpy_counts(t.float().numpy(), k)
    got: dict[int, dict[int, int]] = {}
    for c in src["counts"]:
        got.setdefault(c["layer"], {}).setdefault(c["expert"], 0)
        got[c["layer"]][c["expert"]] += c["count"]
    assert want and set(got) == set(want)
    for layer, w in want.items():
        assert [got[layer].get(e, 0) for e in range(len(w))] == w.tolist()
