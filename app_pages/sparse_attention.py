"""Sparse attention: DSA top-k traces (seed 004) -> KV block hot spots, reuse and prefix overlap."""

import numpy as np
import pandas as pd
import streamlit as st

from studio_backend.dsa import analysis
from studio_backend.paths import existing_file
from studio_ui.figures import dsa as fig
from studio_ui.services_dsa import ingest_service
from studio_ui.state import workspace
from studio_ui.widgets import guarded

st.title("Sparse attention")
st.caption(
    "DeepSeek sparse attention (DSA) traces in seed 004's `trace_steps.jsonl` schema: which KV "
    "blocks each decode step's top-k touches, how that overlaps the prefix cache, and how "
    "blocks are reused (the groundwork for external KV tiers)."
)

HOWTO = """
**No trace in this workspace yet.** Produce one and ingest it:

- Trace a workload with the built-in lightning indexer (CPU, a tiny random-init DSA model):
  `studio dsa run --workload sharegpt --input assets/dsa/sharegpt_sample.json
  --sharegpt-turn-mode per_user_turn --out runs/sharegpt --ingest`
  (also `--workload burstgpt --input assets/dsa/burstgpt_sample.csv` or `--workload needle`).
- Ingest a trace written by DeepSeek-V3.2's instrumented inference (seed 004):
  `studio dsa ingest OUT_DIR/trace_steps.jsonl` (`.jsonl.gz` too; `--follow 60` keeps reading
  while it grows), or use **Ingest a file** above. `summary.json` next to it is attached.
- Mooncake / Qwen-Bailian prefix traces (`hash_ids` JSONL) ingest the same way.
"""


def _capacities(max_blocks: int) -> list[int]:
    caps = np.unique(np.geomspace(1, max(max_blocks, 2), 24).astype(int))
    return caps.tolist()


# Both stay empty when the workspace cannot be opened: the page then shows only the error.
steps = prefix_traces = pd.DataFrame()
with guarded("Opening the workspace"):
    ws = workspace()
    service = ingest_service(ws)
    traces = analysis.list_traces(ws)

    with st.expander("Ingest a file", expanded=traces.empty):
        c1, c2, c3 = st.columns([4, 1, 1])
        raw = c1.text_input(
            "Path", placeholder="/path/to/trace_steps.jsonl(.gz) | summary.json | mooncake.jsonl"
        )
        follow = c2.number_input("Follow (s idle)", 0, 3600, 0, help="keep reading while it grows")
        if c3.button("Ingest", type="primary", disabled=not raw):
            with guarded("Ingesting"):
                service.start(existing_file(raw), float(follow))
                st.toast("Ingest started")
        if service.jobs:
            st.dataframe(
                pd.DataFrame(
                    [
                        {"file": str(j.path), "state": j.state, "rows": j.rows, "error": j.error}
                        for j in service.jobs.values()
                    ]
                ),
                hide_index=True,
                width="stretch",
            )
            if any(
                j.state in ("starting", "ingesting", "following") for j in service.jobs.values()
            ):
                st.button("Refresh")

    steps = traces[traces.kind == "steps"] if not traces.empty else traces
    prefix_traces = traces[traces.kind == "prefix"] if not traces.empty else traces
    if traces.empty or (steps.empty and prefix_traces.empty):
        st.info(HOWTO)

if not steps.empty:
    with guarded("Loading the trace"):
        labels = {
            r.trace_id: f"{r.name} · {r.dataset or '?'} · {r.rows:,} records"
            for r in steps.itertuples()
        }
        tid = st.selectbox("Trace", list(labels), format_func=labels.get)
        meta = steps.set_index("trace_id").loc[tid]
        reqs = analysis.requests(ws, tid)
        lo, hi = analysis.layer_span(ws, tid)
        m = st.columns(6)
        m[0].metric("Records", f"{int(meta['rows']):,}")
        m[1].metric("Requests", len(reqs))
        m[2].metric("Layers", hi - lo + 1)
        m[3].metric("Block size", f"{int(meta['block_size'] or 0)} tok")
        m[4].metric("Prefix hits", int(reqs["prefix_hit"].sum()))
        m[5].metric("Bad lines", int(meta["bad_lines"]))
        gaps = analysis.field_gaps(ws, tid)
        if gaps:
            st.caption(
                "Optional fields absent (seed 004's key fields are all a record needs): "
                + ", ".join(
                    f"{k} in {n:,} of {int(meta['rows']):,} records" for k, n in gaps.items()
                )  # fmt: skip
            )

        c1, c2 = st.columns([1, 2])
        req = c1.selectbox("Request", reqs["request_id"].tolist())
        if hi > lo:
            layer_lo, layer_hi = c2.slider("Layers", lo, hi, (lo, hi))
        else:
            layer_lo, layer_hi = lo, hi
        row = reqs.set_index("request_id").loc[req]
        heat = analysis.heatmap(ws, tid, req, layer_lo, layer_hi)
        if heat.empty:
            st.warning("No selections for this request in the chosen layers.")
        else:
            st.plotly_chart(
                fig.hot_spot_heatmap(
                    heat, layer_hi - layer_lo + 1, int(row["prefix_cached_blocks"] or 0),
                    f"Hot spots · request {req} · layers {layer_lo}-{layer_hi}",
                ),
                width="stretch",
            )  # fmt: skip

    tabs = st.tabs(
        ["Distributions", "Prefix hot blocks", "Reuse", "Overlap", "Fetch & latency", "Bad lines"]
    )
    with tabs[0], guarded("Distributions"):
        d = analysis.record_distributions(ws, tid)
        st.dataframe(
            pd.DataFrame(d).T.rename_axis("per-record value").reset_index(),
            hide_index=True,
            width="stretch",
        )
        a, b = st.columns(2)
        ub = analysis.value_counts(ws, tid, "unique_blocks")
        a.plotly_chart(
            fig.bar(ub.value, ub.n, "Unique blocks per record", "blocks", "records"),
            width="stretch",
        )
        tpb = analysis.value_counts(ws, tid, "tpb_mean", bins=30)
        b.plotly_chart(
            fig.bar(
                tpb.value, tpb.n, "Tokens per touched block (record mean)", "tokens", "records"
            ),
            width="stretch",
        )
        a, b = st.columns(2)
        off = analysis.value_counts(ws, tid, "offset_p50", bins=40)
        a.plotly_chart(
            fig.bar(off.value, off.n, "Median offset of selected tokens", "tokens back", "records"),
            width="stretch",
        )
        offm = analysis.value_counts(ws, tid, "offset_max", bins=40)
        b.plotly_chart(
            fig.bar(offm.value, offm.n, "Farthest selected token", "tokens back", "records"),
            width="stretch",
        )
        summary = analysis.trace_summary_json(ws, tid)
        if summary:
            with st.expander("summary.json (token-level distributions from the producer)"):
                st.json(summary)

    with tabs[1], guarded("Prefix hot blocks"):
        ir = analysis.value_counts(ws, tid, "intersection_ratio", bins=20)
        a, b = st.columns(2)
        a.plotly_chart(
            fig.bar(
                ir.value, ir.n, "Prefix intersection ratio", "touched ∩ prefix / touched", "records"
            ),  # fmt: skip
            width="stretch",
        )
        hot = analysis.prefix_hot_blocks(ws, tid, req).get(str(req), [])
        if hot:
            h = pd.DataFrame(hot)
            b.plotly_chart(
                fig.bar(
                    h.block_id.astype(str),
                    h.touch_count,
                    f"Top-{len(h)} hot prefix blocks · request {req}",
                    "block",
                    "touches",
                ),  # fmt: skip
                width="stretch",
            )
        else:
            b.info(f"Request {req} touches no prefix-cached block (no prefix-cache hit).")
        st.dataframe(
            reqs.rename(columns={"mean_intersection": "mean intersection ratio"}),
            hide_index=True,
            width="stretch",
        )

    with tabs[2], guarded("Reuse"):
        a, b = st.columns(2)
        pop = analysis.block_popularity(ws, tid)
        a.plotly_chart(fig.popularity_cdf(pop), width="stretch")
        rec = analysis.recency_histogram(ws, tid, req, layer_lo, layer_hi)
        b.plotly_chart(
            fig.bar(
                rec.recency_steps,
                rec.touches,
                f"Reuse recency · request {req}",
                "decode steps since last touch",
                "re-touches",
            ),  # fmt: skip
            width="stretch",
        )
        all_reqs = st.checkbox("LRU over every request (one cache per request)", value=False)
        max_blocks = int(heat["block_id"].max()) + 1 if not heat.empty else 16
        curve = analysis.lru_curve(
            ws, tid, _capacities(max_blocks), layer_lo, layer_hi, None if all_reqs else [req]
        )
        st.plotly_chart(
            fig.hit_ratio_curve(curve, "LRU hit ratio vs capacity (blocks = all layers' KV)"),
            width="stretch",
        )

    with tabs[3], guarded("Overlap"):
        j = analysis.jaccard(ws, tid, req)
        a, b = st.columns(2)
        a.plotly_chart(fig.jaccard_box(j["steps"], j["layers"]), width="stretch")
        if not j["steps"].empty:
            b.plotly_chart(fig.jaccard_by_layer(j["steps"]), width="stretch")

    with tabs[4], guarded("Fetch & latency"):
        tiers = analysis.tier_breakdown(ws, tid)
        a, b = st.columns(2)
        a.plotly_chart(fig.tier_bars(tiers), width="stretch")
        b.dataframe(tiers, hide_index=True, width="stretch")
        lat = analysis.step_latency(ws, tid)
        if lat:
            c = st.columns(4)
            for i, k in enumerate(("p50", "p95", "p99", "max")):
                c[i].metric(f"Decode step {k}", f"{lat[k] / 1000:.2f} ms")
        serving = (analysis.trace_summary_json(ws, tid) or {}).get("serving")
        if serving:
            c = st.columns(4)
            for i, k in enumerate(("p50", "p95", "p99", "max")):
                c[i].metric(f"Request latency {k}", f"{serving['latency_ms'][k]:.1f} ms")
            st.caption(f"BurstGPT replay: {serving.get('requests')} requests, FIFO + batching.")

    with tabs[5], guarded("Bad lines"):
        bad = analysis.bad_lines(ws, tid, 200)
        if bad.empty:
            st.success("Every line of this trace was ingested.")
        else:
            st.dataframe(bad, hide_index=True, width="stretch")

if not prefix_traces.empty:
    with guarded("Prefix traces"):
        st.header("KV prefix traces (Mooncake / Qwen-Bailian)")
        plabels = {
            r.trace_id: f"{r.name} · {r.rows:,} requests" for r in prefix_traces.itertuples()
        }
        pid = st.selectbox("Prefix trace", list(plabels), format_func=plabels.get)
        ov = analysis.prefix_trace_overview(ws, pid)
        c = st.columns(4)
        c[0].metric("Prefix-trace requests", f"{ov['requests']:,}")
        c[1].metric("Block accesses", f"{ov['block_accesses']:,}")
        c[2].metric("Distinct blocks", f"{ov['unique_blocks']:,}")
        c[3].metric("Reused accesses", f"{ov['reused_share']:.1%}")
        a, b = st.columns(2)
        a.plotly_chart(
            fig.popularity_cdf(analysis.prefix_trace_popularity(ws, pid)), width="stretch"
        )
        b.plotly_chart(
            fig.hit_ratio_curve(
                analysis.prefix_trace_lru(ws, pid, _capacities(ov["unique_blocks"])),
                "Global LRU hit ratio vs capacity",
            ),
            width="stretch",
        )
