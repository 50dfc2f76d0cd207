"""Kernels: W4A16 MoE layer, reference vs fused, measured here or imported; seed 002 alongside."""

import json

import pandas as pd
import streamlit as st

from studio_backend.bench.published import SOURCE, published_kernel_rows, published_serve_rows
from studio_backend.bench.results import (
    export_run,
    import_text,
    kernel_results,
    list_runs,
    save_result,
    serve_results,
)
from studio_ui.figures import kernels as figs
from studio_ui.state import workspace
from studio_ui.widgets import guarded

st.title("Kernels")
st.caption(
    "Fused W4A16 MoE decode kernel (int4 dequantized in registers, gate+up+SwiGLU+down fused) "
    "against the dequantize-to-memory-then-matmul reference. Every run records its device, "
    "versions and date; GB/s = minimum bytes of the layer / median latency."
)

with guarded("Loading benchmark runs"):
    ws = workspace()
    with st.expander("Add results", expanded=list_runs(ws).empty):
        left, right = st.columns(2)
        with left:
            st.markdown(
                "**Measure** on this machine with the CLI (stop the studio or use another "
                "workspace): `studio bench kernels --preset qwen3-30b-a3b --batch 1,2,3,4,8` "
                "(on a GPU), `studio bench serve --url http://127.0.0.1:8000`. Or run the tiny "
                "preset here (seconds; on a CPU it times the torch paths, labelled CPU):"
            )
            if st.button("Run tiny preset here", icon=":material/play_arrow:"):
                from studio_backend.bench.harness import KernelBenchConfig, run_kernel_bench

                with guarded("Running the tiny preset"), st.spinner("benchmarking"):
                    cfg = KernelBenchConfig(preset="tiny", batches=[1, 2, 3, 4, 8], reps=10)
                    run_id = save_result(ws, run_kernel_bench(cfg))
                    st.success(f"stored run {run_id}")
        with right:
            upload = st.file_uploader(
                "Import a result JSON (`--json-out` / `studio bench export`)", type="json"
            )
            if upload is not None and st.session_state.get("kernels_imported") != upload.file_id:
                with guarded(f"Importing {upload.name}"):
                    run_id = import_text(
                        ws, upload.getvalue().decode("utf-8", "replace"), upload.name
                    )
                    st.session_state["kernels_imported"] = upload.file_id
                    st.success(f"imported run {run_id} from {upload.name}")

    runs = list_runs(ws)
    kruns = runs[runs["kind"] == "kernels"]
    sruns = runs[runs["kind"] == "serve"]
    show_pub = st.toggle(
        "Show seed 002's published Ascend 910B figures (a reference series, not measured here)",
        value=True,
    )
    if runs.empty:
        st.info(
            "No benchmark runs in this workspace yet. Run the tiny preset above, import a JSON "
            "result from a GPU machine, or use `studio bench kernels` / `studio bench serve`."
        )

    st.header("Kernel micro-benchmark")
    if not kruns.empty:
        label = {
            r.run_id: f"{r.name} · {r.device_name} · {str(r.created_at)[:16]} · {r.source}"
            for r in kruns.itertuples()
        }
        chosen = st.multiselect("Runs", list(label), default=list(label)[:2], format_func=label.get)
        df = kernel_results(ws, chosen) if chosen else kernel_results(ws)
        presets = sorted(df["preset"].unique())
        c1, c2, c3 = st.columns(3)
        preset = c1.selectbox(
            "Shape",
            presets,
            index=presets.index("qwen3-30b-a3b") if "qwen3-30b-a3b" in presets else 0,
        )
        routings = sorted(df[df["preset"] == preset]["routing"].unique())
        routing = c2.selectbox("Routing", routings)
        log_y = c3.checkbox("log latency axis", value=False)
        view = df[(df["preset"] == preset) & (df["routing"] == routing)]
    else:
        df = pd.DataFrame()
        view = pd.DataFrame()
        log_y = False
    pub = pd.DataFrame(published_kernel_rows())
    # Latency and GB/s depend on the device and the shape: measured runs and seed 002's 910B
    # series get axes of their own. Speedup is a ratio: overlaid only for the same shape.
    if not view.empty:
        where = f"{figs.devices(view)} · {preset}"  # every device of the chosen runs
        same_shape = show_pub and preset == str(pub["preset"].iloc[0])
        a, b = st.columns(2)
        a.plotly_chart(figs.latency_bars(view, log_y, where=where), width="stretch")
        b.plotly_chart(
            figs.speedup_line(pd.concat([view, pub]) if same_shape else view), width="stretch"
        )
        a, b = st.columns(2)
        a.plotly_chart(figs.bandwidth_chart(view, where=where), width="stretch")
        b.plotly_chart(figs.pct_copy_heatmap(df), width="stretch")
        if show_pub and not same_shape:
            st.caption(
                f"Shape {preset} is not the published series' (qwen3-30b-a3b): the published "
                "speedups are shown below only, not overlaid."
            )
    if show_pub:
        st.subheader("Published reference: Ascend 910B · Qwen3-30B-A3B AWQ (seed 002)")
        st.caption(
            f"Grey hatched/dashed series: published, {SOURCE}. Not measured by the studio; "
            "drawn on axes of their own (another device)."
        )
        a, b = st.columns(2)
        where = "Ascend 910B · qwen3-30b-a3b (published)"
        a.plotly_chart(figs.latency_bars(pub, log_y, where=where), width="stretch")
        b.plotly_chart(figs.bandwidth_chart(pub, where=where), width="stretch")
    if not view.empty:
        cols = ["run_name", "device_name", "batch", "impl", "timing", "median_us", "p20_us", "p80_us",
                "experts_touched", "min_bytes", "gbps", "pct_copy", "tflops", "speedup", "max_rel_err"]  # fmt: skip
        st.dataframe(view[cols], hide_index=True, width="stretch")
        run_id = st.selectbox("Export run as JSON", list(label), format_func=label.get)
        st.download_button(
            "Download JSON", json.dumps(export_run(ws, run_id), indent=1, default=str),
            file_name=f"bench-{run_id}.json", mime="application/json",
        )  # fmt: skip

    st.header("End-to-end decode throughput")
    serve = serve_results(ws) if not sruns.empty else pd.DataFrame()
    spub = pd.DataFrame(published_serve_rows())
    splot = (
        pd.concat([serve, spub]) if show_pub and not serve.empty else (spub if show_pub else serve)
    )
    if not splot.empty:
        # Measured and published (another device and model) in subplots with axes of their own.
        st.plotly_chart(
            figs.throughput_chart(splot, title=None), width="stretch"
        )  # the header names it
    if serve.empty:
        st.caption(
            "Measure a server: `studio bench serve --url URL --batch 1,2,4,6,8 --input-tokens 1 --output-tokens 1024`."
        )
    else:
        st.dataframe(
            serve[["run_name", "batch", "requests", "output_tokens", "wall_s", "tokens_per_s"]],
            hide_index=True,
        )
