"""Trace: which modules run in what order with which shapes, and which kernels cost the time."""

import json

import pandas as pd
import streamlit as st

from studio_backend.trace import analysis, traces
from studio_backend.trace.diff import diff
from studio_backend.trace.ingest import ingest_profile
from studio_backend.trace.model_trace import trace_model_dir
from studio_ui.figures import trace as figs
from studio_ui.state import workspace
from studio_ui.widgets import guarded

st.title("Trace")
st.caption(
    "Module call order and shapes from forward hooks; profiler kernels and ops attributed to "
    "modules and layers (torch.profiler / Kineto, torch_npu, Nsight Systems)."
)

HOW_TO = """
**No traces or profiles in this workspace yet.** To get some:

- Module calls of a model: `studio trace modules --model DIR --prompt "Hello"` (or the form below).
- A profile: `studio profile ingest FILE` with a torch.profiler Chrome trace (`.json`, `.json.gz`),
  a torch_npu `*_ascend_pt` directory, or an `nsys export --type sqlite` file (or the form below).
  Record module annotations with `studio_backend.trace.profile_run.profile_call` so kernels attribute
  to layers.
"""


def _shape_text(raw: str) -> str:
    shapes = json.loads(raw)
    return ", ".join("(" + ", ".join(str(d) for d in s) + ")" for s in shapes) or "-"


def _label(df: pd.DataFrame, id_col: str) -> dict[str, str]:
    return {r[id_col]: f"{r['name']} ({r[id_col]})" for _, r in df.iterrows()}


ws = None
with guarded("Opening the workspace"):
    ws = workspace()

if ws is not None:
    trace_list = traces.list_traces(ws)
    profile_list = analysis.list_profiles(ws)
    if trace_list.empty and profile_list.empty:
        st.info(HOW_TO)

    with st.expander("Add a trace or a profile", expanded=trace_list.empty and profile_list.empty):
        left, right = st.columns(2)
        with left, st.form("trace_model"):
            model_dir = st.text_input("Model directory (HF format)")
            prompt = st.text_input("Prompt", value="Hello, world")
            e1, e2, e3 = st.columns([2, 1, 1])
            engine = e1.selectbox(
                "Engine", ("transformers", "vllm"), key="trace_engine",
                help="vllm: the real vLLM from its venv, launched for this trace (docs/TRACE.md)",
            )  # fmt: skip
            tp = e2.number_input("TP (vllm)", min_value=1, max_value=8, value=1, key="trace_tp")
            step = e3.number_input("Step (vllm)", min_value=0, value=0, key="trace_step",
                                   help="0: the prefill; 1: the first decode step")  # fmt: skip
            if st.form_submit_button("Trace module calls") and model_dir:
                with guarded("Tracing the model"), st.spinner("Running one forward pass…"):
                    from studio_backend.paths import existing_dir

                    if engine == "vllm":
                        from studio_backend.trace.vllm_trace import VllmTraceOptions, trace_vllm

                        opts = VllmTraceOptions(tp=int(tp), step=int(step))
                        traced = trace_vllm(ws, existing_dir(model_dir), prompt, opts)
                        tid, calls = traced[0]
                    else:
                        tid, calls = trace_model_dir(ws, existing_dir(model_dir), prompt)
                    st.success(f"Stored trace {tid} ({len(calls)} calls).")
                    st.rerun()
        with right, st.form("ingest_profile"):
            path = st.text_input("Profile file or directory")
            if st.form_submit_button("Ingest profile") and path:
                with guarded("Ingesting the profile"), st.spinner("Ingesting…"):
                    info: dict = {}
                    pid = ingest_profile(ws, path, info=info)
                    if info["bad_events"]:
                        st.warning(
                            f"Profile {pid}: {info['bad_events']} bad events skipped"
                            f" (first: {info['first_bad']})."
                        )
                    elif info["existing"]:
                        st.info(f"Already ingested (same content): profile {pid}.")
                    else:
                        st.success(f"Ingested profile {pid}.")
                        st.rerun()

        with st.form("profile_run"):
            st.markdown("**Profile a run** (`studio profile run`): torch.profiler around a few "
                        "greedy steps, kernels attributed to modules and layers")  # fmt: skip
            p1, p2 = st.columns([3, 2])
            prof_model = p1.text_input("Model directory to profile", key="prof_model")
            prof_prompt = p2.text_input(
                "Prompt to profile", value="Hello, world", key="prof_prompt"
            )
            q1, q2, q3 = st.columns([2, 1, 1])
            prof_engine = q1.selectbox(
                "Engine to profile", ("reference", "transformers", "vllm"), key="prof_engine",
                help="reference: the studio's engine (vLLM's module layout); transformers: any "
                "causal LM; vllm: the real vLLM's own torch profiler, one profile per rank",
            )  # fmt: skip
            prof_tp = q2.number_input("TP", min_value=1, max_value=8, value=1, key="prof_tp")
            prof_tokens = q3.number_input("Tokens", min_value=1, value=2, key="prof_tokens")
            if st.form_submit_button("Profile") and prof_model:
                with guarded("Profiling the run"), st.spinner("Profiling…"):
                    from studio_backend.paths import existing_dir

                    model = existing_dir(prof_model, "model directory")
                    if prof_engine == "vllm":
                        from studio_backend.trace.vllm_trace import VllmTraceOptions, profile_vllm

                        done = profile_vllm(ws, model, prof_prompt, int(prof_tokens),
                                            VllmTraceOptions(tp=int(prof_tp)))  # fmt: skip
                        pids = [pid for pid, _ in done]
                    else:
                        from studio_backend.trace.engine_profile import profile_model_dir

                        pid, _ = profile_model_dir(
                            ws, model, prompt=prof_prompt, max_tokens=int(prof_tokens),
                            tp=int(prof_tp), engine=prof_engine,
                        )  # fmt: skip
                        pids = [pid]
                    st.success(f"Stored profile(s) {', '.join(pids)}.")
                    st.rerun()

    calls_tab, profile_tab = st.tabs(["Module calls", "Profiles"])

    with calls_tab:
        if trace_list.empty:
            st.info("No module trace yet: `studio trace modules --model DIR --prompt TEXT`.")
        else:
            names = _label(trace_list, "trace_id")
            tid = st.selectbox(
                "Trace", list(names), format_func=names.get,
                index=traces.first_choice(trace_list["name"].tolist()), key="trace_id",
            )  # fmt: skip
            counts = traces.class_counts(ws, tid)
            c1, c2 = st.columns([2, 3])
            with c1:
                st.subheader("Calls per module class")
                st.dataframe(
                    counts, hide_index=True, width="stretch",
                    column_config={"wall_us": st.column_config.NumberColumn("wall µs", format="%.1f")},
                )  # fmt: skip
            with c2:
                st.plotly_chart(figs.class_counts_bar(counts), width="stretch")
            layer_ids = traces.layers(ws, tid)
            st.subheader("Call order per layer")
            layer = st.selectbox("Layer", layer_ids, key="trace_layer") if layer_ids else None
            rows = traces.calls(ws, tid, layer)
            table = pd.DataFrame(
                {
                    "#": range(1, len(rows) + 1),
                    "module": [
                        "  " * int(d) + m
                        for d, m in zip(rows["depth"], rows["module"], strict=True)
                    ],
                    "class": rows["module_class"],
                    "input": [_shape_text(s) for s in rows["in_shapes"]],
                    "output": [_shape_text(s) for s in rows["out_shapes"]],
                    "dtype": [", ".join(json.loads(d)) for d in rows["out_dtypes"]],
                    "wall µs": rows["wall_us"].round(1),
                }
            )
            st.dataframe(table, hide_index=True, width="stretch", height=420)

    with profile_tab:
        if profile_list.empty:
            st.info("No profile yet: `studio profile ingest FILE` (Kineto JSON, torch_npu, nsys).")
        else:
            names = _label(profile_list, "profile_id")
            ids = list(names)
            a_col, b_col = st.columns(2)
            a = a_col.selectbox(
                "Profile", ids, format_func=names.get,
                index=traces.first_choice(profile_list["name"].tolist()), key="profile_a",
            )  # fmt: skip
            compare = ["(none)"] + [i for i in ids if i != a]
            b = b_col.selectbox(
                "Compare with",
                compare,
                format_func=lambda i: names.get(i, i),
                index=1 if len(compare) > 1 else 0,
                key="profile_b",
            )
            k_col, r_col = st.columns(2)
            kind = k_col.radio(
                "Time of", ["auto", "kernel", "cpu_op"], horizontal=True, key="profile_kind",
                help="auto: device kernels when the profile has them, else cpu ops",
            )  # fmt: skip
            rank_by = r_col.radio(
                "Rank by", ["self", "total"], horizontal=True, key="profile_rank_by",
                help="self: an op's time minus its children's (torch.profiler's default table);"
                " total: inclusive time, which counts nested ops (aten::linear, aten::matmul,"
                " aten::mm) once each",
            )  # fmt: skip
            with guarded("Analysing the profile"):
                info = analysis.profile_info(ws, a)
                m1, m2, m3 = st.columns(3)
                m1.metric("Format", info["format"])
                m2.metric("Events", f"{info['n_events']:,}")
                lost = analysis.unattributed(ws, a, kind=kind)
                mods = analysis.by_module(ws, a, kind=kind)
                total = mods["total_us"].sum()
                m3.metric(
                    "Unattributed", f"{(lost['total_us'].sum() / total if total else 0):.1%}",
                    help="time that no module annotation encloses (graph replays, no launch)",
                )  # fmt: skip
                sides = [a] if b == "(none)" else [a, b]
                cols = st.columns(len(sides))
                for pid, col in zip(sides, cols, strict=True):
                    with col:
                        st.markdown(f"**{names[pid]}**")
                        top = analysis.top(ws, pid, kind=kind, n=15, by=rank_by)
                        st.plotly_chart(
                            figs.top_bar(top, f"Top kernels / ops by {rank_by} time"),
                            width="stretch", key=f"top_{pid}",
                        )  # fmt: skip
                        st.dataframe(
                            top[["name", "calls", "self_us", "total_us", "share"]],
                            hide_index=True, width="stretch", key=f"top_table_{pid}",
                            column_config={
                                "self_us": st.column_config.NumberColumn("self µs", format="%.1f"),
                                "total_us": st.column_config.NumberColumn("total µs", format="%.1f"),
                                "share": st.column_config.NumberColumn("self share", format="percent"),
                            },
                        )  # fmt: skip
                        st.plotly_chart(
                            figs.family_bar(analysis.families(ws, pid, kind=kind)),
                            width="stretch", key=f"fam_{pid}",
                        )  # fmt: skip
                        layer_df = analysis.per_layer(ws, pid, kind=kind)
                        if layer_df["layer"].notna().any():
                            st.plotly_chart(
                                figs.layer_heatmap(layer_df), width="stretch", key=f"heat_{pid}"
                            )
                        else:
                            st.caption("No layer annotations in this profile.")
                if b != "(none)":
                    st.subheader("Difference")
                    by = st.radio(
                        "Compare by", ["name", "family", "module"], horizontal=True, key="diff_by"
                    )
                    d = diff(ws, a, b, by=by, kind=kind)
                    st.plotly_chart(
                        figs.diff_bar(d, names[a], names[b]), width="stretch", key="diff_fig"
                    )
                    st.dataframe(d, hide_index=True, width="stretch")
                st.subheader("Attribution by module")
                st.dataframe(mods, hide_index=True, width="stretch")
                if not lost.empty:
                    st.markdown("**Unattributed, by reason**")
                    st.dataframe(lost, hide_index=True, width="stretch")
