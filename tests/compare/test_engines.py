"""Whole-run comparison on real dumps: the reference engine (vLLM layout, TP=2) against
transformers under the real msprobe, bf16 against fp32 across TP layouts, W4A16 experts against
bf16, and the same by statistics only (msit statistics.csv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from studio_backend.compare.runs import compare_any, compare_runs, load_matrix
from studio_backend.dumps.ingest import ingest_dump

offline = pytest.importorskip("studio_backend.engines.reference.offline")
pytest.importorskip("msit_llm")
pytest.importorskip("msprobe")
from studio_backend.engines.reference.dumping import DumpOptions  # noqa: E402
from studio_backend.models.create import create_model  # noqa: E402
from tests.compare.models import variant  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
IDS = [11, 57, 203, 9, 100, 42, 7]


def _engine(model: Path, out: Path, tp: int, tool: str = "msit", stats: int = 0) -> Path:
    opts = DumpOptions(tool=tool, dump_path=out, token_range=[0, 1], dump_statistics_mode=stats)
    return offline.run_offline(model, tp=tp, prompts=[IDS], max_tokens=2, dump=opts).dump_root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("compare-engines")
    tiny = create_model(base / "tiny", preset="tiny", seed=0)
    bf16 = variant(tiny, base / "tiny-bf16")
    w4a16 = variant(tiny, base / "tiny-w4a16", w4a16_experts=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kernels")])}
    for out, task in (("hf", "tensor"), ("hf-stats", "statistics")):
        subprocess.run(
            [sys.executable, "-m", "tests.compare.hf_msprobe", str(tiny), str(base / out),
             ",".join(map(str, IDS)), task],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    dumps = {
        "hf": base / "hf" / "dump",
        "hf_stats": base / "hf-stats" / "dump",
        "ref_f32_tp2_msprobe": _engine(tiny, base / "ref-f32-tp2", 2, "msprobe"),
        "f32_tp1": _engine(tiny, base / "f32-tp1", 1),
        "bf16_tp1": _engine(bf16, base / "bf16-tp1", 1),
        "bf16_tp2": _engine(bf16, base / "bf16-tp2", 2),
        "w4a16_tp1": _engine(w4a16, base / "w4a16-tp1", 1),
        "bf16_tp2_stats": _engine(bf16, base / "bf16-tp2-stats", 2, stats=1),
        "w4a16_tp1_stats": _engine(w4a16, base / "w4a16-tp1-stats", 1, stats=1),
    }
    return tiny, dumps


@pytest.fixture(scope="module")
def ingested(runs, tmp_path_factory):
    from studio_backend.workspace import open_workspace

    ws = open_workspace(tmp_path_factory.mktemp("compare-ws"))
    ids = {name: ingest_dump(ws, path) for name, path in runs[1].items()}
    yield ws, ids, runs[0]
    ws.close()


def test_reference_engine_tp2_vs_transformers_msprobe(ingested) -> None:
    ws, ids, tiny = ingested
    res = compare_runs(ws, ids["ref_f32_tp2_msprobe"], ids["hf"])
    assert res.conventions == ("fused", "split")
    assert res.first is None
    t = res.table[res.table["rel_diff"].notna()]
    assert len(t) >= 60
    assert (t["cosine"] > 0.99999).all(), t.sort_values("cosine").head(3)
    pairs = {(r.label, r.module_b) for r in t.itertuples()}
    for layer in range(3):
        p = f"model.layers.{layer}"
        for part, hf in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj")):
            assert (f"{p}.self_attn.qkv_proj[{part}] output_0", f"{p}.self_attn.{hf}") in pairs
        assert (f"{p}.self_attn.qkv_proj input_0", f"{p}.self_attn.q_proj") in pairs
    assert (
        "model.layers.0.mlp.gate_up_proj[gate] output_0",
        "model.layers.0.mlp.gate_proj",
    ) in pairs
    assert ("model.layers.0.mlp.gate_up_proj[up] output_0", "model.layers.0.mlp.up_proj") in pairs
    # the experts block: vLLM's keyword input with HF's positional one, and both outputs
    assert ("model.layers.1.mlp.experts input_hidden_states", "model.layers.1.mlp.experts") in pairs
    assert ("model.layers.1.mlp.experts output_0", "model.layers.1.mlp.experts") in pairs
    # what could not be aligned is listed with the reason
    un = res.unaligned
    layer_out = un[(un["module"] == "model.layers.1") & (un["io"] == "output") & (un["run"] == "A")]
    assert set(layer_out["index"]) == {0, 1} and layer_out["reason"].str.contains("sum").all()
    assert ((un["module"] == "(whole step)") & (un["run"] == "A")).sum() == 1  # decode step
    assert any("k_proj input_0 is the same tensor as q_proj" in n for n in res.notes)
    # one metric against numpy on the raw tensors: K of the fused output vs HF k_proj
    row = t[t["label"] == "model.layers.2.self_attn.qkv_proj[k] output_0"].iloc[0]
    pair = res.pairs[int(row.name)]
    cfg = json.loads((tiny / "config.json").read_text())
    q, kv = (
        cfg["num_attention_heads"] * cfg["head_dim"],
        cfg["num_key_value_heads"] * cfg["head_dim"],
    )
    a = load_matrix(ws, pair.a, {}) if not pair.a.split else None
    from studio_backend.dumps.query import load_tensor

    whole = load_tensor(ws, pair.a.tensor_id).double().numpy()
    x = whole[..., q : q + kv].reshape(len(IDS), kv) if pair.a.split else a.double().numpy()
    y = load_tensor(ws, pair.b.tensor_id).double().numpy().reshape(len(IDS), kv)
    assert row["rel_diff"] == pytest.approx(
        np.sum((x - y) ** 2) / (np.sum(x * x) + np.sum(y * y)), rel=1e-9
    )


def test_bf16_rounding_does_not_cry_wolf(ingested) -> None:
    ws, ids, _ = ingested
    for a, b in (("bf16_tp1", "bf16_tp2"), ("f32_tp1", "bf16_tp2"), ("f32_tp1", "bf16_tp1")):
        res = compare_runs(ws, ids[a], ids[b])
        assert res.first is None, (a, b, res.first)
        assert res.unaligned.empty, res.unaligned
        worst = float(res.table["rel_diff"].max())
        assert 1e-7 < worst < 1e-3 / 4, (a, b, worst)  # bf16 rounding, with a margin


def test_w4a16_experts_against_bf16_part_where_quantization_enters(ingested) -> None:
    ws, ids, _ = ingested
    res = compare_runs(ws, ids["bf16_tp2"], ids["w4a16_tp1"])
    f = res.first
    # layer 0 is dense (mlp_only_layers [0]); the first quantized weights are layer 1's experts
    assert (f["step"], f["module"], f["io"]) == (0, "model.layers.1.mlp.experts", "output")
    before = res.table.loc[: f["row"] - 1]
    assert not before["diverged"].any()
    # the four biggest contributions are the experts (both layers, both steps)
    top = res.ranked.head(4)
    assert set(top["module"]) == {"model.layers.1.mlp.experts", "model.layers.2.mlp.experts"}
    assert top["diverged"].all()


def test_statistics_only_runs(ingested) -> None:
    ws, ids, _ = ingested
    # statistics (msit statistics.csv, TP=2 merged) against tensors: bf16 rounding only
    same = compare_any(ws, ids["bf16_tp2_stats"], ids["bf16_tp1"])
    assert same.as_json()["mode"] == "statistics"
    assert same.first is None and len(same.table) > 50
    # the shared, in-place rotary_emb is listed, not compared
    assert same.unaligned["module"].str.endswith("rotary_emb").any()
    res = compare_any(ws, ids["bf16_tp2_stats"], ids["w4a16_tp1_stats"])
    f = res.first
    # statistics see less than tensors: quantization shows at an experts output, though not
    # necessarily the first one the tensors name
    assert f["module"].endswith(".mlp.experts") and f["label"].endswith("output_0")
    assert f["value"] > f["threshold"] == 2e-2
    # containers are not ranked: the experts outputs lead, as with tensors
    top = res.ranked.head(4)
    assert set(top["module"]) == {"model.layers.1.mlp.experts", "model.layers.2.mlp.experts"}


def test_msprobe_statistics_dump_json(ingested) -> None:
    ws, ids, _ = ingested
    # msprobe dump.json statistics of transformers against the same model's tensors, and
    # against the reference engine's tensors (another naming convention)
    for ref in ("hf", "ref_f32_tp2_msprobe"):
        res = compare_any(ws, ids[ref], ids["hf_stats"])
        assert res.first is None, (ref, res.first)
        assert len(res.table) > 40
        floats = res.table[res.table["dtype_a"].str.startswith("float")]
        assert len(floats) > 40 and (floats["stat_rel_delta"] < 1e-5).all()
        # what `studio compare --json` prints: strict JSON (no NaN)
        out = json.loads(json.dumps(res.as_json(), allow_nan=False))
        assert out["mode"] == "statistics" and out["compared"] == len(res.table)
