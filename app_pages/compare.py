"""Compare: where two runs part, across engines, TP layouts, dtypes and quantization."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from studio_backend.compare.divergence import THRESHOLDS
from studio_ui import services_activations as act
from studio_ui import services_compare as svc
from studio_ui.figures import activations as afigs
from studio_ui.figures import compare as cfigs
from studio_ui.widgets import guarded

st.title("Compare")
st.caption(
    "Run B against run A (the reference), tensor by tensor: modules aligned by name and role "
    "across vLLM / SGLang / Hugging Face naming, steps and tokens by position, every shard "
    "stitched first. The first tensor whose rel_diff crosses its dtype pair's threshold is where "
    "the runs part. `studio compare A B` prints the same; docs/COMPARE.md explains the metrics."
)

HOW_TO = """Comparing needs two ingested runs. For example:

1. `studio demo` twice with different settings, or dump the same prompt with two engines
   (the reference engine and transformers under msprobe, vLLM at TP=1 and TP=2, bf16 and W4A16).
2. Ingest both on the **Dumps** page or with `studio ingest DUMP_DIR`.
3. Pick them here as A (reference) and B."""

qp = st.query_params


def _fmt(v: object) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3e}"


run_a = run_b = None
steps_txt, modules, thr = "", "", 0.0
with guarded("Listing runs"):
    runs = act.runs()
    if len(runs) < 2:
        st.info(HOW_TO)
        st.stop()
    ids = runs["run_id"].tolist()
    names = dict(zip(runs["run_id"], runs["name"], strict=True))

    def label(r: str) -> str:
        return f"{names[r]}  ({r})"

    def _index(key: str, default: int) -> int:
        return ids.index(qp[key]) if qp.get(key) in ids else default

    c1, c2 = st.columns(2)
    run_a = c1.selectbox("Run A (reference)", ids, index=_index("a", 1), format_func=label,
                         key="cmp_a")  # fmt: skip
    run_b = c2.selectbox("Run B (under test)", ids, index=_index("b", 0), format_func=label,
                         key="cmp_b")  # fmt: skip
    with st.expander("Options"):
        o1, o2, o3 = st.columns(3)
        steps_txt = o1.text_input("Step positions", "", key="cmp_steps",
                                  help="e.g. 0 or 0,1 (0 = the prefill); empty = all")  # fmt: skip
        modules = o2.text_input("Modules (regex)", "", key="cmp_modules")
        thr = o3.number_input(
            "rel_diff threshold (0 = by dtype pair)", min_value=0.0, value=0.0, format="%.1e",
            key="cmp_thr",
            help="defaults: " + ", ".join(f"{k} {v:.0e}" for k, v in THRESHOLDS.items()),
        )  # fmt: skip

if run_a is None:
    st.stop()
if run_a == run_b:
    st.warning("Pick two different runs.")
    st.stop()
qp["a"], qp["b"] = run_a, run_b
steps = None
res = None
with guarded("Comparing"):
    from studio_backend.compare.cli import parse_steps

    steps = parse_steps(steps_txt) if steps_txt.strip() else None
    with st.spinner("Comparing every aligned tensor..."):
        res = svc.compare(run_a, run_b, steps, modules, thr or None)
if res is None:
    st.stop()

stats_mode = not hasattr(res, "per_token")
f = res.first
if f is None:
    st.success(f"No divergence: all {len(res.table)} compared tensors are within their "
               "thresholds.")  # fmt: skip
else:
    tok = "" if f.get("first_token") is None else f", first at token {f['first_token']}"
    st.error(
        f"**First divergence:** step {f['step']} · `{f['label']}` (B: `{f['module_b']}`) · "
        f"{f['metric']} {_fmt(f['value'])} > {_fmt(f['threshold'])}{tok}"
    )
m1, m2, m3, m4 = st.columns(4)
m1.metric("Tensors compared", len(res.table))
m2.metric("Diverged", int(res.table["diverged"].sum()) if len(res.table) else 0)
m3.metric("Not aligned", len(res.unaligned))
m4.metric("Naming A / B", f"{res.conventions[0] or '?'} / {res.conventions[1] or '?'}")
if stats_mode:
    st.info("At least one run holds statistics only: compared by Max / Min / norm deltas.")

tabs = st.tabs(["Heatmap & 3D", "Ranked", "All tensors", "Not aligned", "Notes"])
with tabs[0], guarded("Heatmap"):
    if stats_mode or res.table.empty:
        st.info("The heatmap needs tensors in both runs.")
    else:
        steps_here = sorted(res.table["step"].unique().tolist())
        h1, h2 = st.columns([1, 3])
        step = h1.selectbox("Step position", steps_here, key="cmp_hstep",
                            index=steps_here.index(f["step"]) if f else 0)  # fmt: skip
        io = h1.radio("Tensors", ["output", "input"], horizontal=True, key="cmp_io")
        mat = res.heatmap(step, io=io)
        thr_by = res.table.drop_duplicates("label").set_index("label")["threshold"]
        fig = cfigs.heatmap_figure(
            mat,
            thr_by,
            title=f"step {step}: log10 rel_diff per token (grey: identical; squares: over threshold)",
        )
        event = st.plotly_chart(fig, key="cmp_heat", on_select="rerun", selection_mode="points",
                                config={"displaylogo": False})  # fmt: skip
        points = (event or {}).get("selection", {}).get("points", []) if event else []
        sub = res.table[(res.table["step"] == step) & res.table["rel_diff"].notna()]
        labels = sub["label"].tolist()
        picked = points[0].get("y") if points else None
        if picked not in labels:
            picked = f["label"] if f and f["label"] in labels else (labels[0] if labels else None)
        if picked is not None:
            choice = h2.selectbox("Tensor for the 3D view (or click a heatmap cell)", labels,
                                  index=labels.index(picked), key=f"cmp_t_{picked}")  # fmt: skip
            row = int(sub[sub["label"] == choice].index[0])
            r = res.table.loc[row]
            st.caption(
                f"A `{r['module_a']}` vs B `{r['module_b']}` · {r['tokens']} tokens x "
                f"{r['channels']} channels · cosine {r['cosine']:.8f} · rel_diff "
                f"{_fmt(r['rel_diff'])} · max abs {_fmt(r['max_abs_error'])}"
            )
            ga, gb, gd = svc.pair_grids(run_a, run_b, row, steps, modules, thr or None)
            cfig = afigs.compare_figure(ga, gb, gd, labels=("A", "B"))
            st.components.v1.html(afigs.figure_html(cfig, sync_cameras=True), height=600)
            first_tok = res.token_first(step)
            parted = [(t, lab) for t, lab in enumerate(first_tok) if lab is not None]
            if parted:
                st.caption("Where each token parts first: " + "; ".join(
                    f"token {t}: {lab}" for t, lab in parted[:12]))  # fmt: skip

with tabs[1], guarded("Ranking"):
    st.caption(f"Ranked by {res.ranked_by}; containers (self_attn, mlp, layers) are not ranked "
               "when their children are compared.")  # fmt: skip
    st.dataframe(res.ranked.head(50), width="stretch", hide_index=True)

with tabs[2], guarded("Table"):
    t = res.table.drop(columns=[c for c in ("canonical",) if c in res.table])
    st.dataframe(t, width="stretch", hide_index=True)
    st.download_button("Download CSV", t.to_csv(index=False).encode(), "compare.csv", "text/csv")

with tabs[3], guarded("Unaligned"):
    if res.unaligned.empty:
        st.success("Every tensor of both runs was aligned.")
    else:
        st.caption("Tensors with no counterpart, or whose meaning differs between the runs' "
                   "naming conventions: listed with the reason, never compared silently.")  # fmt: skip
        st.dataframe(res.unaligned, width="stretch", hide_index=True)

with tabs[4]:
    st.write(pd.DataFrame({"note": res.notes}) if res.notes else "No notes.")
