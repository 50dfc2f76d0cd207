"""Home: what is in the workspace, what hardware is here, where to start."""

import pandas as pd
import streamlit as st

from studio_backend import hardware
from studio_ui.navigation import available_pages
from studio_ui.state import workspace
from studio_ui.widgets import guarded, stack_table

st.title("Inference Inspection Studio")
st.caption(
    "Dump, stitch and look inside served LLMs: activations, experts, kernels, "
    "sparse attention and profiles."
)

with guarded("Opening the workspace"):
    ws = workspace()
    counts = ws.table_counts()
    c1, c2, c3 = st.columns(3)
    c1.metric("Workspace", ws.root.name, help=str(ws.root))
    c2.metric("Schema version", ws.schema_version())
    c3.metric("Rows stored", f"{sum(counts.values()):,}")
    st.caption(f"Workspace directory: `{ws.root}`")

    left, right = st.columns([1, 1])
    with left:
        st.subheader("Workspace tables")
        st.dataframe(
            pd.DataFrame({"table": list(counts), "rows": list(counts.values())}),
            hide_index=True,
            width="stretch",
        )
    with right:
        st.subheader("Recent activity")
        activity = ws.recent_activity(15)
        if activity:
            st.dataframe(
                pd.DataFrame(activity, columns=["at", "kind", "message"]),
                hide_index=True,
                width="stretch",
            )
        else:
            st.info("Nothing has happened in this workspace yet.")

st.subheader("Run the demo")
st.caption(
    "Creates a tiny Qwen3-MoE that looks like a real LLM inside (massive activations on the "
    "first and delimiter tokens, long-tailed expert routing), serves it with the CPU reference "
    "engine at tp=2 with msit_llm dumps, sends a bundled text, ingests the dump, dumps the same "
    "request at tp=1 as the Compare page's reference run and fills the expert load, a DSA "
    "trace, a profile and a module trace: every page has data. "
    "CLI twin: `studio demo`."
)
if st.button("Run the demo", icon=":material/play_arrow:"):
    with guarded("Running the demo"):
        from studio_backend.engines.demo_fill import run_full_demo

        bar = st.progress(0.0, text="Starting")
        full = run_full_demo(workspace(), lambda f, m: bar.progress(min(f, 1.0), text=m))
        # Rerun so the counts and activity above include the new data.
        st.session_state["demo_done"] = full.lines
        st.rerun()
for line in st.session_state.get("demo_done", []):
    st.success(line)

st.subheader("Hardware stacks")
st.dataframe(pd.DataFrame(stack_table(hardware.as_dicts())), hide_index=True, width="stretch")

others = [p for p in available_pages() if p.url != "home"]
if others:
    st.subheader("Where to start")
    for p in others:
        st.page_link(p.file, label=p.title, icon=p.icon)
