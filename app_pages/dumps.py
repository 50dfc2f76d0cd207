"""Dumps: ingest msit_llm / msprobe / SGLang dumps; runs and ranks, module tree, stitch proofs."""

import json
import os

import pandas as pd
import streamlit as st

from studio_backend.dumps import query
from studio_backend.errors import InputError
from studio_backend.paths import existing_file
from studio_ui.figures.dumps import module_treemap, verdict_style
from studio_ui.services_ingest import ingest_service
from studio_ui.state import workspace
from studio_ui.widgets import guarded

HOW_TO = """No dumps in this workspace yet. To get one:

1. Dump a served model with **msit_llm** or **msprobe** (vLLM-Ascend, or the studio's reference
   engine on the **Launch** page), or with SGLang (`--debug-tensor-dump-output-folder`, or its
   dumper: `DUMPER_ENABLE=1 DUMPER_DIR=...`), or point at an existing dump folder.
2. Enter the dump folder (or any folder inside it) above and press **Ingest**, or **Watch** to
   ingest while the server is still writing it. From a shell: `studio ingest DIR [--watch]`.
"""

st.title("Dumps")
st.caption(
    "Rank shards are stitched into the true unsharded tensors and every stitch is checked: "
    "replicas must be equal, partial sums must add up to the parent block's output."
)

service = ingest_service()

with st.form("ingest"):
    c1, c2, c3 = st.columns([3, 1.2, 1.5])
    folder = c1.text_input(
        "Dump folder",
        placeholder="/data/dump_data, …/torch_tensors, …/step0, an SGLang dump folder",
    )
    name = c2.text_input("Run name (optional)")
    cfg_path = c3.text_input("Model config.json (optional)", help="head counts for the QKV split")
    ray_address = st.text_input(
        "Ray head (optional)", value=os.environ.get("STUDIO_RAY_ADDRESS", ""),
        placeholder="10.0.0.5:6379",
        help="a dump spread over several machines: each node reads its own rank folders where "
        "they lie (the dump folder is the path on every node) and sends back only rows, "
        "statistics and outliers (docs/DUMPS.md)",
    )  # fmt: skip
    b1, b2, _ = st.columns([1, 1, 4])
    once = b1.form_submit_button("Ingest", type="primary")
    watch = b2.form_submit_button("Watch")
if once or watch:
    with guarded("Starting the ingest"):
        if not folder.strip():
            raise InputError("dump folder", "enter a folder")
        cfg = json.loads(existing_file(cfg_path.strip()).read_text()) if cfg_path.strip() else None
        if watch and ray_address.strip():
            raise InputError("Watch", "watches a dump on this machine; with a Ray head, "
                             "Ingest again when more of the dump is written (it resumes)")  # fmt: skip
        if watch:
            service.watch(folder.strip(), name.strip() or None, cfg)
        else:
            service.ingest(folder.strip(), name.strip() or None, cfg, ray=ray_address.strip())
        st.toast(f"{'Watching' if watch else 'Ingesting'} {folder.strip()}")


@st.fragment(run_every=1.0 if service.active() else None)
def live_progress() -> None:
    if not service.jobs:
        return
    st.subheader("Ingest progress")
    rows = pd.DataFrame([j.row() for j in service.jobs])
    st.dataframe(rows, hide_index=True, width="stretch")
    for i, job in enumerate(service.jobs):
        if (
            job.mode == "watch"
            and not job.done
            and st.button(f"Stop watching {job.path}", key=f"stop{i}")
        ):
            with guarded("Stopping the watch"):
                service.stop(job)
                st.rerun()
    if not service.active() and any(j.done for j in service.jobs):
        st.caption("All ingests finished.")


live_progress()


def _mb(nbytes: int) -> str:
    mb = nbytes / 1e6
    return f"{mb:,.0f} MB" if mb >= 10 else f"{mb:.2f} MB"


def _failed_section(ws, run_id: str, step: int, report: pd.DataFrame) -> None:
    """A failed stitch has no stitched tensor: offer what each rank dumped instead."""
    failed = report[report.verdict == "failed"]
    if failed.empty:
        return
    st.subheader(f"Failed stitches · step {step} ({len(failed)})")
    st.error(
        "These tensors did not stitch: no stitched tensor was kept, so exports, Activations and "
        "Experts never show them as true. Below is what each rank dumped."
    )
    keys = list(failed[["module", "io", "idx"]].itertuples(index=False, name=None))
    module, io, idx = st.selectbox(
        "Failed tensor", keys, format_func=lambda k: f"{k[0]} {k[1]}[{k[2]}]", key=f"fail-{run_id}"
    )
    why = failed[(failed.module == module) & (failed.io == io) & (failed.idx == idx)]
    st.caption(f"Verdict: failed · rule {why.rule.iloc[0]} · {why.detail.iloc[0]}")
    st.dataframe(
        query.rank_comparison(ws, run_id, step, module, io, int(idx)),
        hide_index=True,
        width="stretch",
    )


def _shared_section(ws, run_id: str) -> None:
    shared = query.shared_modules(ws, run_id)
    if shared.empty:
        return
    st.subheader(f"Shared modules ({len(shared)})")
    st.warning(
        "One module object under several names, or called by several layers: the dump tool "
        "names its files after one path and keeps only its last call of a step. Read these "
        "modules' tensors with that in mind."
    )
    st.dataframe(shared, hide_index=True, width="stretch")


with guarded("Reading the dumps"):
    ws = workspace()
    runs = query.list_runs(ws)
    if runs.empty:
        st.info(HOW_TO)
        st.stop()
    st.subheader("Runs")
    st.dataframe(
        runs[
            [
                "name",
                "format",
                "tp_size",
                "status",
                "steps",
                "rank_tensors",
                "stitched_tensors",
                "created_at",
                "run_id",
                "root",
            ]
        ],  # fmt: skip
        hide_index=True,
        width="stretch",
    )
    labels = {
        r.run_id: f"{r.name} · {r.format} · tp={r.tp_size} · {r.run_id}" for r in runs.itertuples()
    }
    run_id = st.selectbox("Run", list(labels), format_func=labels.get)
    left, right = st.columns([1, 1])  # the ranks' seven columns need half the width
    with left:
        st.markdown("**Ranks**")
        ranks = query.ranks(ws, run_id)
        # Bytes as "3.75 MB" and narrow columns, so every column fits at 1440-1600 px (the
        # raw byte count was cut off).
        ranks["bytes"] = [_mb(int(b)) for b in ranks["bytes"]]
        small = st.column_config.Column(width="small")
        st.dataframe(
            ranks.rename(columns={"bytes": "size"}),
            hide_index=True,
            width="stretch",
            column_config={c: small for c in ("rank", "device", "pid", "files", "size", "steps")},
        )
    report = query.stitch_report(ws, run_id)
    with right:
        st.markdown("**Stitch verdicts**")
        counts = (
            report.groupby("verdict")
            .size()
            .reindex(list(query.VERDICT_ORDER))
            .fillna(0)
            .astype(int)
        )
        cols = st.columns(4)
        for col, (verdict, n) in zip(cols, counts.items(), strict=True):
            col.metric(verdict, f"{n:,}")
    n_ref, ref_bytes = query.referenced_in_dump(ws, run_id)
    if n_ref:
        c1, c2 = st.columns([4, 1.4])
        c1.caption(
            f"{n_ref:,} stitched tensors ({_mb(ref_bytes)}), identical on every rank, "
            "are read from rank 0's dump files rather than copied. Copy them into the workspace "
            "before moving or deleting the dump (`studio pack DUMP`)."
        )
        if c2.button("Copy into workspace", key=f"pack-{run_id}"):
            with guarded("Copying the tensors into the workspace"):
                from studio_backend.dumps.pack import pack_run

                n, nbytes = pack_run(ws, run_id)
                st.success(f"Copied {n:,} tensors ({_mb(nbytes)}) into the workspace.")
    steps = query.steps(ws, run_id)
    if steps:
        step = st.select_slider("Step", steps, value=steps[0]) if len(steps) > 1 else steps[0]
        tree = query.module_tree(ws, run_id, step)
        st.subheader(f"Module tree · step {step}")
        st.caption("Colour = worst stitch verdict of the module's tensors (green verified, amber "
                   "assumed, red failed, grey unknown).")  # fmt: skip
        if not tree.empty:
            st.plotly_chart(module_treemap(tree), width="stretch")
        st.subheader("Stitch report")
        only_bad = st.toggle("Only failed / unknown", value=False)
        shown = report[report.step == step]
        if only_bad:
            shown = shown[shown.verdict.isin(["failed", "unknown"])]
        # the token axis each stitched tensor is viewed with (statistics, surfaces)
        axes = query.axes(ws, run_id)[["tensor_id", "layout"]].rename(
            columns={"layout": "token axis"}
        )
        shown = (
            shown.merge(axes, on="tensor_id", how="left")
            .drop(columns=["tensor_id"])
            .assign(ranks=shown.ranks.map(lambda r: ",".join(map(str, r))).to_numpy())
        )
        st.dataframe(verdict_style(shown), hide_index=True, width="stretch")
        _failed_section(ws, run_id, step, report[report.step == step])
    else:
        tool = query.tool_stats(ws, run_id)
        if not tool.empty:  # a statistics-only dump: the tool's own numbers are all there is
            st.subheader("Statistics written by the dump tool")
            st.caption(
                "No tensor files in this dump (msprobe `task: statistics` / msit "
                "`dump_statistics_mode=1`): Max, Min, Mean and Norm per tensor as the tool wrote "
                "them. The Activations page charts them."
            )
            st.dataframe(tool.drop(columns=["source_file"]), hide_index=True, width="stretch")
    _shared_section(ws, run_id)
    errors = query.ingest_errors(ws, run_id)
    st.subheader(f"Ingest errors ({len(errors)})")
    if errors.empty:
        st.success("No ingest errors for this run.")
    else:
        st.error(
            f"{len(errors)} file(s) or tensor(s) had problems; the rest of the dump was ingested."
        )
        st.dataframe(errors, hide_index=True, width="stretch")
