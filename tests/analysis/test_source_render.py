"""Selection, per-layer statistics and batch render on an ingested dump (oracle: its arrays)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("studio_backend.dumps.query", reason="needs the dumps package")

from studio_backend.analysis import outliers, source  # noqa: E402
from studio_backend.analysis.render import file_name, render, selections  # noqa: E402
from studio_backend.analysis.source import Selected  # noqa: E402
from tests.analysis.dumpdata import HEAD_DIM, HEADS, OUTLIER_CHANNELS, write_dump  # noqa: E402
from tests.conftest import REPO  # noqa: E402


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.workspace import open_workspace

    d = tmp_path_factory.mktemp("act")
    session, truth = write_dump(d / "dump")
    ws = open_workspace(d / "ws")
    run_id = ingest_dump(ws, session)
    yield ws, run_id, truth, d
    ws.close()


def test_load_split_and_stats(ingested) -> None:
    ws, run_id, truth, _ = ingested
    m = "model.layers.1.self_attn.qkv_proj"
    k = source.load(ws, Selected(run_id, 0, m, "output", 0, "k")).float().numpy()
    q = HEADS * HEAD_DIM
    np.testing.assert_array_equal(k, truth[(m, "output", 0)][:, q : q + 16])
    stats = source.layer_stats(ws, run_id, step=0, io="input", pattern=r"input_layernorm")
    assert stats["layer"].tolist() == [0, 1, 2]
    for r in stats.itertuples():
        x = truth[(r.module, "input", 0)]
        d = x.astype(np.float64) - x.mean()
        assert r.kurtosis == pytest.approx((d**4).mean() / (d**2).mean() ** 2, rel=1e-9)
        assert r.top_channel == 42 and r.massive == 1
    pers = source.persistence(ws, stats, "input_layernorm", k=2)
    assert sorted(pers.columns) == sorted(OUTLIER_CHANNELS)
    h = truth[("model.layers.2.input_layernorm", "input", 0)]
    assert pers.loc[2, 42] == np.abs(h[:, 42]).max()
    assert source.module_kind("model.layers.12.mlp.down_proj") == "mlp.down_proj"
    assert source.module_kind("model.layers.12") == "decoder layer"  # every layer: one kind
    assert source.module_kind("model.norm") == "model.norm"
    top = outliers.top_k(source.load(ws, Selected(run_id, 0, stats.module[0], "input", 0, None)), 1)
    assert (int(top.token[0]), int(top.channel[0]), float(top.value[0])) == (0, 42, 2496.0)


def test_selections_split_fused_and_render_html(ingested) -> None:
    ws, run_id, _, d = ingested
    sels = selections(ws, run_id, pattern=r"layers\.0\.(self_attn|mlp)\.", io="output", step=0)
    labels = [(s.module.split(".", 3)[-1], s.part) for s in sels]
    assert labels == [
        ("mlp.down_proj", None),
        ("mlp.gate_up_proj", "gate"),
        ("mlp.gate_up_proj", "up"),
        ("self_attn.o_proj", None),
        ("self_attn.qkv_proj", "q"),
        ("self_attn.qkv_proj", "k"),
        ("self_attn.qkv_proj", "v"),
    ]
    files = render(
        ws, run_id, d / "html", pattern=r"layers\.0\.self_attn\.o_proj", fmt="html", workers=1
    )
    assert [f.name for f in files] == [file_name(sels[3], "html")]
    assert "model.layers.0.self_attn.o_proj output_0 step 0" in files[0].read_text()


@pytest.mark.slow
def test_cli_renders_png(ingested, tmp_path: Path) -> None:
    ws, run_id, _, d = ingested
    ws.close()  # the CLI opens the workspace itself (single DuckDB writer)
    out = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(d / "ws"), "render", run_id,
         "--layer-pattern", r"layers\.[01]\.input_layernorm", "--io", "input",
         "--out", str(tmp_path / "png"), "--workers", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    pngs = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert pngs == [
        "model.layers.0.input_layernorm.input_0.step0.png",
        "model.layers.1.input_layernorm.input_0.step0.png",
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "studio_backend.cli", "--workspace", str(d / "ws"), "render", "nope",
         "--layer-pattern", "x", "--out", str(tmp_path / "x")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "neither a run id of this workspace nor a dump directory" in bad.stderr
