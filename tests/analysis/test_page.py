"""The Activations page on an ingested dump (AppTest): planted outliers on top, deep links."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

pytest.importorskip("studio_backend.dumps.query", reason="needs the dumps package")

from studio_ui.navigation import ROOT  # noqa: E402
from tests.analysis.dumpdata import write_dump  # noqa: E402

PAGE = str(ROOT / "app_pages/activations.py")


@pytest.fixture
def filled(workspace_dir: Path, tmp_path: Path) -> str:
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.workspace import open_workspace

    session, _ = write_dump(tmp_path / "dump")
    ws = open_workspace(workspace_dir)
    run_id = ingest_dump(ws, session)
    ws.close()
    return run_id


def test_page_shows_planted_outliers(filled: str) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["pattern"] = r"layers\.1\.input_layernorm"
    at.query_params["io"] = "input"
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["top channel"] == "42"
    assert metrics["massive"] == "1"
    assert not at.dataframe  # lazy tabs: the Statistics tab computes only when opened
    st_at = AppTest.from_file(PAGE, default_timeout=120)
    st_at.query_params.update(pattern=r"layers\.1\.input_layernorm", io="input", tab="Statistics")
    st_at.run()
    assert not st_at.exception, st_at.exception
    top = st_at.dataframe[0].value
    assert top["channel"].iloc[0] == 42 and top["token"].iloc[0] == 0
    assert set(top["channel"].iloc[:5]) <= {11, 42}
    # PNG export renders off-screen in the server process (PyVista, EGL) without an error.
    at.button(key="png_surface").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.query_params["module"] in (
        "model.layers.1.input_layernorm",
        ["model.layers.1.input_layernorm"],
    )


def test_page_parts_compare_and_kronecker(filled: str) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["pattern"] = r"layers\.0\."
    at.query_params["module"] = "model.layers.0.self_attn.qkv_proj"
    at.query_params["part"] = "v"
    at.query_params["tab"] = "Kronecker"
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="act_part").value == "v"
    # Kronecker tab: Hadamard (x) Hadamard spreads the planted channel-5 outlier.
    kron = {m.label: float(m.value) for m in at.metric if "before" in m.label or "after" in m.label}
    assert kron["absmax after"] < kron["absmax before"]
    assert kron["kurtosis after"] < kron["kurtosis before"]
    # Compare o_proj (= 0.5 h) with down_proj (= 0.25 h): same outlier structure.
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(pattern=r"layers\.0\.", tab="Compare")
    at.run()
    at.selectbox(key="act_module").set_value("model.layers.0.self_attn.o_proj").run()
    at.selectbox(key="cmp_module").set_value("model.layers.0.mlp.down_proj").run()
    assert not at.exception, at.exception
    m = {x.label: x.value for x in at.metric}
    assert m["cosine"] == "1.000000"
    assert m["absmax Spearman"] == "1.000"
    assert m["within 0.5 %"] == "0.00%"


def test_page_across_layers(filled: str) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["pattern"] = r"input_layernorm"
    at.query_params["io"] = "input"
    at.query_params["tab"] = "Statistics"
    at.run()
    at.toggle(key="act_layers").set_value(True).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[-1].value
    norms = table[table["kind"] == "input_layernorm"].sort_values("layer")
    assert norms["layer"].tolist() == [0, 1, 2]
    assert norms["top_channel"].tolist() == [42, 42, 42]
    assert norms["massive"].tolist() == [1, 1, 1]


def test_page_says_which_tensors_did_not_stitch(workspace_dir: Path, tmp_path: Path) -> None:
    """A failed stitch (real vLLM 0.32 layout, rank 1's o_proj output broken) is not drawn as if
    true: the page names it and draws the layer's other tensors."""
    from studio_backend.dumps import synthetic_vllm as V
    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.dumps.synthetic import SynthConfig
    from studio_backend.workspace import open_workspace

    cfg = SynthConfig(layers=3, dense_layers=(0,))
    truth = V.make_truth(cfg, [4], seed=7)
    bad = (0, "model.layers.1.self_attn.o_proj", "output", 0)
    session = V.write_msit(tmp_path / "v", cfg, truth, 2, tamper={bad: 0.5})
    ws = open_workspace(workspace_dir)
    ingest_dump(ws, session)
    ws.close()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["pattern"] = r"layers\.1\.self_attn"
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert errors == [
        "1 output tensor(s) of step 0 did not stitch (model.layers.1.self_attn.o_proj failed): "
        "no stitched tensor exists, so they are not shown. The Dumps page lists each rank's tensor."
    ]


def test_outlier_finder_jumps_to_the_surface(filled: str) -> None:
    """The finder's top tensor by max |x| is layer 2's input_layernorm input (the planted 2500 x 3
    massive activation, 7488 in bf16); one click shows its surface."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(pattern=r"layers\.0\.", tab="Outlier finder")
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert (table["module"].iloc[0], table["io"].iloc[0]) == (
        "model.layers.2.input_layernorm",
        "input",
    )
    assert table["max_abs"].iloc[0] == 7488.0
    at.button(key="find_go").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="act_module").value == "model.layers.2.input_layernorm"
    assert at.radio(key="act_io").value == "input"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["max |x|"] == "7488"
    assert metrics["top channel"] == "42"


def test_compare_b_follows_a_until_the_user_picks_b(filled: str) -> None:
    """B starts as A; the user's B stays while A is unchanged; a new A resets B to it."""
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(pattern=r"layers\.0\.", tab="Compare")
    at.run()
    at.selectbox(key="act_module").set_value("model.layers.0.self_attn.o_proj").run()
    assert not at.exception, at.exception

    def b() -> tuple:
        return tuple(at.selectbox(key=k).value for k in ("cmp_step", "cmp_io", "cmp_module"))

    assert b() == (0, "output", "model.layers.0.self_attn.o_proj")
    at.selectbox(key="cmp_module").set_value("model.layers.0.mlp.down_proj").run()
    at.slider[-1].set_value(5).run()  # any other rerun keeps the user's B
    assert b() == (0, "output", "model.layers.0.mlp.down_proj")
    assert {x.label: x.value for x in at.metric}["cosine"] == "1.000000"
    at.selectbox(key="act_module").set_value("model.layers.0.self_attn.qkv_proj").run()
    assert b() == (0, "output", "model.layers.0.self_attn.qkv_proj")
    at.radio(key="act_io").set_value("input").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="cmp_io").value == "input"
    assert at.selectbox(key="cmp_module").value == at.selectbox(key="act_module").value


def test_page_warns_of_nan_and_inf(workspace_dir: Path, tmp_path: Path) -> None:
    """A tensor holding NaN / inf (an fp16 overflow): the surface tab says how many (they are
    holes in the surface) and the top-outlier table names them (it shows NaN as None)."""
    import torch

    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.workspace import open_workspace

    session, _ = write_dump(tmp_path / "dump")
    (f,) = session.rglob("0/root.model.layers.1.input_layernorm/input_0.pth")
    t = torch.load(f, weights_only=True)
    t[5, 7], t[9, 20], t[12, 30] = float("nan"), float("inf"), float("-inf")
    torch.save(t, f)
    ws = open_workspace(workspace_dir)
    ingest_dump(ws, session)
    ws.close()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params.update(pattern=r"layers\.1\.input_layernorm", io="input")
    at.run()
    assert not at.exception, at.exception
    (warning,) = [w.value for w in at.warning if "NaN" in w.value]
    assert warning.startswith("1 NaN and 2 +-inf values in this tensor")
    st_at = AppTest.from_file(PAGE, default_timeout=120)
    st_at.query_params.update(pattern=r"layers\.1\.input_layernorm", io="input", tab="Statistics")
    st_at.run()
    assert not st_at.exception, st_at.exception
    top = st_at.dataframe[0].value
    assert top[["token", "channel", "non-finite"]].iloc[:3].values.tolist() == [
        [5, 7, "NaN"], [9, 20, "+inf"], [12, 30, "-inf"]
    ]  # fmt: skip
    assert (top["non-finite"].iloc[3:] == "").all()
