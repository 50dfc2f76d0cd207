"""The token-axis rule table and its bookkeeping (evidence changing while a dump streams in)."""

from __future__ import annotations

import pandas as pd

from studio_backend.dumps import axis as ax
from studio_backend.dumps import axis_store

HF = ax.RunFacts("msprobe", True, "ids [2, 7]", frozenset({(4, 16), (2, 16)}), 64)
VLLM = ax.RunFacts("msit", False, "ids [14]", frozenset({(4, 16), (2, 16)}), 64)
SGL = ax.RunFacts("sglang_hook", None, "", frozenset(), None)


def _k(shape, module="model.layers.0.mlp", run=HF, integer=False, io="output", arg=None):
    a = ax.decide(ax.TensorFacts(tuple(shape), integer, module, io, arg), run)
    return a.token_dims, a.layout, a.source


def test_rules() -> None:
    assert _k([2, 7, 64]) == (2, "[batch, seq, hidden]", "format")
    assert _k([14, 64], run=VLLM) == (1, "[tokens, hidden]", "format")
    assert _k([14, 4]) == (1, "[tokens, channels]", "format")
    assert _k([2, 7, 4, 16], "model.layers.0.self_attn.q_norm") == (
        2, "[batch, seq, heads, head_dim]", "module")  # fmt: skip
    assert _k([14, 2, 16], "model.layers.0.self_attn.k_norm", VLLM) == (
        1, "[tokens, heads, head_dim]", "module")  # fmt: skip
    # heads recognised from config.json alone (a module name the rules do not know)
    assert _k([14, 4, 16], "model.layers.0.self_attn.attn", VLLM) == (
        1, "[tokens, heads, head_dim]", "config")  # fmt: skip
    # ... but a batch-first [1, 4, 16] (seq 4 = heads) is not mistaken for heads
    assert _k([1, 4, 16], "model.rotary_emb", HF)[:2] == (2, "[batch, seq, channels]")
    assert _k([2, 7], "model.embed_tokens", HF, True, "input") == (2, "[batch, seq]", "module")
    assert _k([2, 7], "root", HF, True, "input") == (2, "[batch, seq]", "module")
    assert _k([14], "model.embed_tokens", VLLM, True, "input") == (1, "[tokens]", "shape")
    assert _k([14, 2], "model.layers.0.mlp.experts", HF, True, "input")[0] == 1  # top-k ids
    assert _k([8, 3, 64], run=SGL)[0] == 1  # SGLang never has a batch dim
    assert _k([64])[:2] == (0, "[hidden] (one token)")
    assert ax.matrix_shape([2, 7, 4, 16], 2) == (14, 64)


def test_batch_evidence() -> None:
    assert ax.batch_evidence([("model.embed_tokens", "input", 0, None, [2, 7])]) == (
        True, "model.embed_tokens input ids are [2, 7]")  # fmt: skip
    assert ax.batch_evidence([("model.layers.3", "output", 0, None, [14, 64])])[0] is False
    assert ax.batch_evidence([("model.norm", "output", 0, None, [2, 7, 64])])[0] is True
    assert ax.batch_evidence([("model.layers.0.mlp", "output", 0, None, [2, 7, 64])]) == (None, "")


def _add(ws, tid: int, module: str, io: str, dtype: str, shape: list[int]) -> None:
    row = pd.DataFrame([{"tensor_id": tid, "run_id": "r", "step": 0, "module": module, "io": io,
                         "idx": 0, "dtype": dtype, "shape": shape, "nbytes": 0}])  # fmt: skip
    cur = ws.cursor()
    cur.register("_r", row)
    cur.execute("INSERT INTO dump_tensors BY NAME SELECT * FROM _r")
    cur.unregister("_r")


def test_late_evidence_redecides_and_drops_stale_stats(workspace) -> None:
    cur = workspace.cursor()
    cur.execute(
        "INSERT INTO dump_runs (run_id, name, root, format, status) "
        "VALUES ('r', 'r', '/x', 'msit', 'watching')"
    )
    _add(workspace, 1, "model.layers.0.self_attn.attn", "output", "bfloat16", [6, 3, 64])
    assert axis_store.assign(workspace, "r") == 1
    assert axis_store.get(workspace, 1).token_dims == 2  # no evidence yet: batch-first guess
    cur.execute("INSERT INTO dump_stats (tensor_id, numel) VALUES (1, 1152)")
    cur.execute("INSERT INTO dump_outliers VALUES (1, 0, 0, 0, 1.0)")
    _add(workspace, 2, "model.embed_tokens", "input", "int64", [6])  # flat ids arrive
    axis_store.assign(workspace, "r")
    a = axis_store.get(workspace, 1)
    assert (a.token_dims, a.layout) == (1, "[tokens, c0, c1]")
    assert "input ids are [6]" in a.reason
    assert cur.execute("SELECT count(*) FROM dump_stats").fetchone() == (0,)
    assert cur.execute("SELECT count(*) FROM dump_outliers").fetchone() == (0,)


def test_sglang_hook_dump_is_flat(tmp_path, workspace) -> None:
    """SGLang's hook layout (fixture written from SGLang's source by another author): every
    tensor is [tokens, ...]; q_norm [tokens, heads, head_dim]."""
    import numpy as np

    from studio_backend.dumps import query
    from studio_backend.dumps.ingest import ingest_dump
    from tests.dumps.sglang_docs_fixture import write_hook_dump

    fx = write_hook_dump(tmp_path / "sg", tp=2, passes=1)
    run = ingest_dump(workspace, fx["dump_dir"])
    df = query.find_tensors(workspace, run).merge(query.axes(workspace, run), on="tensor_id")
    assert len(df) == len(query.find_tensors(workspace, run))  # every stitched tensor has one
    multi = df[df["shape"].map(len) >= 2]
    assert set(multi["token_dims"]) == {1}
    q = df[df.module.str.endswith("q_norm")].iloc[0]
    assert (q.layout, q.source) == ("[tokens, heads, head_dim]", "module")
    x = query.load_tensor(workspace, int(q.tensor_id)).float().numpy()
    s = (
        workspace.cursor()
        .execute("SELECT channel_absmax FROM dump_stats WHERE tensor_id = ?", [int(q.tensor_id)])
        .fetchone()[0]
    )
    np.testing.assert_allclose(s, np.abs(x.reshape(x.shape[0], -1)).max(0), rtol=1e-6)
