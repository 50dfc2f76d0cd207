"""Each recorder format round-trips its fixture into the workspace table; bad files are named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from studio_backend.errors import InputError
from studio_backend.moe import store
from studio_backend.moe.detect import read_source
from studio_backend.moe.formats import expert_map
from tests.moe import fixtures


def _by_step(ws, name):
    df = store.counts_by_step(ws, name)
    return {(r.step, r.layer, r.expert): r.count for r in df.itertuples()}


def test_sglang_stat_roundtrip(workspace, tmp_path) -> None:
    lc = fixtures.sglang_stat(tmp_path / "expert_distribution_recorder_1.0.pt")
    (load,) = read_source(tmp_path / "expert_distribution_recorder_1.0.pt", num_devices=2)
    store.save(workspace, load, "sg")
    got = _by_step(workspace, "sg")
    want = {(s, ly, e): int(lc[s, ly, e]) for s in range(3) for ly in range(1, 4) for e in range(8)}
    assert got == want  # dense layer 0 and the unused buffer row are dropped
    agg = store.aggregate(workspace, "sg")
    np.testing.assert_array_equal(agg.expert_load, lc[:3, 1:].sum(0))
    np.testing.assert_array_equal(agg.device_load, lc[:3, 1:].sum(0).reshape(3, 2, 4).sum(-1))


def test_sglang_per_token_with_physical_map(workspace, tmp_path) -> None:
    # 2 layers, 6 physical slots over 2 ranks; slots 4,5 are replicas of experts 0 and 3
    p2l = np.array([[0, 1, 2, 3, 0, 3], [3, 2, 1, 0, 1, 2]], dtype=np.int64)
    records, ids = fixtures.sglang_per_token(tmp_path / "rec_0.pt", 0, p2l)
    (load,) = read_source(tmp_path / "rec_0.pt", num_devices=2)
    assert load.kind == "sglang-per_token"
    store.save(workspace, load, "pt")
    got = _by_step(workspace, "pt")
    for fp, idarr in enumerate(ids):
        for layer in range(2):
            v = idarr[layer].reshape(-1)
            want = np.bincount(p2l[layer][v[v >= 0]], minlength=4)
            assert [got[(fp, layer, e)] for e in range(4)] == want.tolist()
    tok = store.tokens_for_expert(workspace, "pt", 1, 3)
    want_tokens = sorted(
        (fp, t)
        for fp, idarr in enumerate(ids)
        for t in range(5)
        for c in idarr[1, t]
        if c >= 0 and p2l[1, c] == 3
    )
    assert sorted(zip(tok.step, tok.token)) == want_tokens
    assert set(tok.input_id) <= set(range(100, 105))
    dev = store.aggregate(workspace, "pt").device_load
    phys = sum(np.bincount(i[0].reshape(-1)[i[0].reshape(-1) >= 0], minlength=6) for i in ids)
    assert dev[0].tolist() == [phys[:3].sum(), phys[3:].sum()]


def test_vllm_pt_with_expert_map(workspace, tmp_path) -> None:
    load_t = torch.arange(2 * 4).reshape(2, 4)
    torch.save({"expert_load_pass": load_t}, tmp_path / "load.pt")
    fixtures.expert_map(tmp_path / "map.json", [[[3, 1], [0, 2]], [[0, 1], [2, 3]]])
    (load,) = read_source(tmp_path / "load.pt", expert_map_path=tmp_path / "map.json")
    store.save(workspace, load, "v")
    got = _by_step(workspace, "v")
    assert [got[(0, 0, e)] for e in range(4)] == [2, 1, 3, 0]  # slot order 3,1,0,2
    assert store.aggregate(workspace, "v").device_load.tolist() == [[1, 5], [9, 13]]
    pl = expert_map.read(tmp_path / "map.json")
    assert json.loads(expert_map.dumps(pl)) == json.loads((tmp_path / "map.json").read_text())


def test_vllm_window_and_moe_load(tmp_path) -> None:
    torch.save(torch.ones(3, 2, 8, dtype=torch.int64), tmp_path / "w.pt")
    (load,) = read_source(tmp_path / "w.pt", num_devices=4)
    assert sorted(load.counts.step.unique()) == [0, 1, 2] and load.counts["count"].sum() == 48
    torch.save({"moe_load": torch.arange(12).reshape(2, 3, 2)}, tmp_path / "a.pt")
    (asc,) = read_source(tmp_path / "a.pt")
    assert asc.num_devices == 3
    assert asc.counts.query("layer == 1 and device == 2")["count"].tolist() == [10, 11]


def test_mindie_cumulative_rows_are_diffed(workspace, tmp_path) -> None:
    per_iter = fixtures.mindie_folder(tmp_path / "hot")
    (load,) = read_source(tmp_path / "hot")
    assert load.kind == "mindie-decode" and load.top_k == 2
    store.save(workspace, load, "m")
    got = _by_step(workspace, "m")
    want = {
        (i, ly, e): int(per_iter[i, ly, e]) for i in range(4) for ly in range(3) for e in range(8)
    }
    assert got == want
    ranks = workspace.cursor().execute("SELECT DISTINCT slot // 4, rank FROM moe_counts").fetchall()
    assert sorted(ranks) == [(0, 0), (1, 1)]


def test_duplicate_name_refused_and_nothing_lost(workspace, tmp_path) -> None:
    fixtures.sglang_stat(tmp_path / "a.pt")
    (load,) = read_source(tmp_path / "a.pt")
    store.save(workspace, load, "x")
    n = workspace.cursor().execute("SELECT count(*) FROM moe_counts").fetchone()[0]
    with pytest.raises(InputError, match="exists"):
        store.save(workspace, load, "x")
    assert workspace.cursor().execute("SELECT count(*) FROM moe_counts").fetchone()[0] == n


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad.pt", b"not a pickle", "not a readable torch.save file"),
        ("float.pt", None, "non-integer counts"),
        ("map.json", b'{"moe_layer_count": 2, "layer_list": []}', "layer_list must be"),
    ],
)
def test_malformed_files_name_file_and_problem(tmp_path, name, content, problem) -> None:
    path = tmp_path / name
    if content is None:
        torch.save(torch.full((2, 4), 0.5), path)
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as err:
        if name.endswith(".json"):
            expert_map.read(path)
        else:
            read_source(path)
    assert str(path) in str(err.value)


def test_malformed_csv(tmp_path) -> None:
    fixtures.mindie_folder(tmp_path / "hot")
    bad = tmp_path / "hot" / "decode" / "decode_1.csv"
    bad.write_text("1,2,3,4\n5,x,7,8\n")
    with pytest.raises(InputError, match="row 2: not a number") as err:
        read_source(tmp_path / "hot")
    assert "decode_1.csv" in str(err.value)
    bad.write_text("9,9,9,9\n" * 3 + "1,1,1,1\n" * 3)  # decreasing: not cumulative
    with pytest.raises(InputError, match="not cumulative"):
        read_source(tmp_path / "hot")


def test_aggregate_without_slot_table_matches(workspace, tmp_path) -> None:
    p2l = np.array([[0, 1, 2, 3, 0, 3], [3, 2, 1, 0, 1, 2]], dtype=np.int64)
    fixtures.sglang_per_token(tmp_path / "rec_0.pt", 0, p2l)
    (load,) = read_source(tmp_path / "rec_0.pt", num_devices=2)
    store.save(workspace, load, "s")
    fast = store.aggregate(workspace, "s")
    workspace.cursor().execute("DELETE FROM moe_slots WHERE source = 's'")
    slow = store.aggregate(workspace, "s")
    np.testing.assert_array_equal(fast.expert_load, slow.expert_load)
    np.testing.assert_array_equal(fast.device_load, slow.device_load)
    assert fast.layers == slow.layers == [0, 1]


def test_sglang_per_pass_folder_merges_ranks(workspace, tmp_path) -> None:
    p2l = np.tile(np.arange(4), (2, 1))
    d = tmp_path / "rec"
    d.mkdir()
    _, ids0 = fixtures.sglang_per_token(d / "expert_distribution_recorder_1.5_0.pt", 0, p2l)
    _, ids1 = fixtures.sglang_per_token(d / "expert_distribution_recorder_1.5_1.pt", 1, p2l)
    (load,) = read_source(d)
    assert load.num_devices == 2 and sorted(load.counts["rank"].unique()) == [0, 1]
    store.save(workspace, load, "both")
    got = _by_step(workspace, "both")
    for fp in range(2):
        v = np.concatenate([ids0[fp][1].reshape(-1), ids1[fp][1].reshape(-1)])
        assert [got[(fp, 1, e)] for e in range(4)] == np.bincount(v[v >= 0], minlength=4).tolist()
