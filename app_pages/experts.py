"""Experts: MoE expert load from dumps and engine recorders, balance metrics, checkpoints."""

from urllib.parse import urlencode

import pandas as pd
import streamlit as st
from streamlit.errors import StreamlitAPIException

from studio_backend.errors import InputError
from studio_backend.moe import metrics, store
from studio_backend.moe.cli import import_source
from studio_ui.figures import experts as figs
from studio_ui.state import workspace
from studio_ui.widgets import guarded

st.title("Experts")
st.caption(
    "Which experts each MoE layer routes tokens to, how evenly the devices are loaded, and how "
    "that changes over steps. Every balance number comes with its definition."
)

HOW_TO = """No expert load in this workspace yet. Import one of:

- **a dump** of the reference engine / vLLM-Ascend (ingested on the Dumps page): router logits
  (`mlp.gate` or, in vLLM 0.32, `mlp.experts.gate` outputs) are routed top-k here, below "Import";
- **SGLang** `expert_distribution_recorder_*.pt` (`--expert-distribution-recorder-mode
  stat|per_pass|per_token`, then `/dump_expert_distribution_record`);
- **vLLM / vllm-ascend** expert-load `.pt` (`[layers, experts]` or `[steps, layers, experts]`)
  with an optional expert map JSON;
- a **MindIE** hot-spot folder (`decode_<rank>.csv`, `model_gen_config.json`).

CLI twin: `studio experts PATH --name NAME [--devices N] [--expert-map MAP.json]`."""


def _import_section(ws) -> None:
    with st.expander("Import expert load", expanded=store.sources(ws).empty):
        with st.form("moe_import"):
            path = st.text_input(
                "File or folder on this machine",
                placeholder="/data/expert_distribution_recorder_1.pt",
            )
            c1, c2, c3 = st.columns(3)
            name = c1.text_input("Name (optional)")
            devices = c2.number_input("EP devices (0 = from the source)", 0, 4096, 0)
            emap = c3.text_input("Expert map JSON (optional)")
            if st.form_submit_button("Import"):
                with guarded("Importing expert load"):
                    if not path.strip():
                        raise InputError("path", "enter a file or folder path")
                    names = import_source(ws, path.strip(), name=name.strip() or None,
                                          devices=int(devices) or None, expert_map=emap.strip() or None)  # fmt: skip
                    st.success(f"Imported {', '.join(names)}")
        try:
            from studio_backend.dumps import query

            runs = query.list_runs(ws)
        except Exception:  # noqa: BLE001 - dumps tables absent: nothing to offer
            runs = pd.DataFrame()
        if not runs.empty:
            with st.form("moe_dump"):
                run = st.selectbox(
                    "Dump run",
                    runs["run_id"],
                    format_func=lambda r: f"{runs.set_index('run_id').loc[r, 'name']} ({r})",
                )
                k = st.number_input("Top-k (0 = from the run's config)", 0, 64, 0)
                if st.form_submit_button("Route router logits of this run"):
                    with guarded("Routing the dump's router logits"):
                        names = import_source(ws, f"dump:{run}", top_k=int(k) or None)
                        st.success(f"Imported {', '.join(names)}")


def _summary(agg) -> None:
    cols = st.columns(len(agg.summary))
    for col, (key, val) in zip(cols, agg.summary.items(), strict=True):
        col.metric(key.replace("_", " "), f"{val:.4f}", help=metrics.DEFINITIONS[key])


def _layer_table(agg) -> None:
    cfg = {
        key: st.column_config.NumberColumn(key, help=metrics.DEFINITIONS[key], format="%.4f")
        for key in ("balancedness", "peak_to_avg", "cv", "entropy", "topk_share")
    }
    st.dataframe(agg.table, hide_index=True, width="stretch", column_config=cfg)
    with st.expander("Definitions"):
        for key, text in metrics.DEFINITIONS.items():
            st.markdown(f"- **{key}**: {text}")


def _tokens_section(ws, name: str, agg, info: dict) -> None:
    st.subheader("Tokens routed to an expert")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", agg.layers, key="moe_tok_layer")
    expert = c2.number_input("Expert", 0, int(info["num_experts"]) - 1, 0, key="moe_tok_expert")
    tok = store.tokens_for_expert(ws, name, int(layer), int(expert))
    if tok.empty:
        if store.has_tokens(ws, name):
            st.info(f"Expert {int(expert)} received no tokens in layer {layer} of this source.")
        else:
            st.info("This source has no per-token routing (only dumps and SGLang per_token do).")
        return
    st.dataframe(tok, hide_index=True, width="stretch", height=240)
    meta = info.get("meta")
    run_id = None
    if isinstance(meta, str) and '"run_id"' in meta:
        import json

        run_id = json.loads(meta).get("run_id")
    if run_id:
        step = int(tok["step"].iloc[0])
        ids = ", ".join(map(str, tok[tok.step == step]["token"].tolist()[:30]))
        from studio_backend.moe.from_dump import router_module

        module = router_module(ws, run_id, int(layer))  # mlp.gate or mlp.experts.gate
        params = {"run": run_id, "step": str(step), "module": module}
        label = f"Open these tokens' router input in Activations (step {step}, tokens {ids})"
        try:
            st.page_link("app_pages/activations.py", label=label, query_params=params)
        except StreamlitAPIException:  # page run outside st.navigation (tests): plain link
            st.markdown(f"[{label}](/activations?{urlencode(params)})")


def _show(ws, name: str, log: bool) -> tuple[dict, store.Aggregate]:
    info = store.source_info(ws, name)
    agg = store.aggregate(ws, name)
    st.caption(f"{info['kind']} · {info['path']} · {info['num_experts']} experts · "
               f"{info['num_devices']} devices · top-k {info['top_k'] or 'unknown'}")  # fmt: skip
    _summary(agg)
    st.plotly_chart(figs.heatmap(agg.expert_load, agg.layers, "expert", log=log,
                                 title="Tokens per layer and expert"), key=f"hm_{name}")  # fmt: skip
    st.plotly_chart(figs.heatmap(agg.device_load, agg.layers, "device", log=log,
                                 title="Tokens per layer and device"), key=f"dev_{name}")  # fmt: skip
    return info, agg


with guarded("Opening the workspace"):
    ws = workspace()
    _import_section(ws)
    src = store.sources(ws)
    if src.empty:
        st.info(HOW_TO)
    else:
        names = src["source"].tolist()
        qp = st.query_params
        default = names.index(qp["source"]) if qp.get("source") in names else len(names) - 1
        c1, c2, c3 = st.columns([2, 2, 1])
        name = c1.selectbox("Source", names, index=default)
        other = c2.selectbox("Compare with (before/after rebalance)", ["(none)", *names])
        log = c3.toggle("Log colour", value=False)
        if other == "(none)":
            info, agg = _show(ws, name, log)
            st.subheader("Balance per layer")
            _layer_table(agg)
            ev = store.evolution(ws, name)
            if len(ev) > 1:
                st.subheader("Evolution over steps")
                st.plotly_chart(figs.evolution(ev), key="evo")
            st.subheader("Hot experts")
            st.dataframe(store.hot_experts(ws, name), hide_index=True, width="stretch")
            _tokens_section(ws, name, agg, info)
        else:
            left, right = st.columns(2)
            for col, n in ((left, name), (right, other)):
                with col:
                    st.subheader(n)
                    _, agg = _show(ws, n, log)
                    st.dataframe(agg.table[["layer", "balancedness", "peak_to_avg", "cv"]],
                                 hide_index=True, width="stretch")  # fmt: skip

st.divider()
st.subheader("Checkpoint inspector")
with st.form("ckpt"):
    path = st.text_input("Checkpoint directory (config.json + *.safetensors)")
    c1, c2 = st.columns(2)
    tp = c1.number_input("TP", 1, 1024, 1)
    ep = c2.number_input("EP", 1, 1024, 1)
    go = st.form_submit_button("Inspect")
if go:
    with guarded("Inspecting the checkpoint"):
        from studio_backend.moe.checkpoint import inspect

        if not path.strip():
            raise InputError("path", "enter a checkpoint directory")
        rep = inspect(path.strip(), tp=int(tp), ep=int(ep))
        st.write(f"**MoE layers** {rep['moe_layers']} · **dense layers** {rep['dense_layers']} · "
                 f"{rep['tensors']} tensors · dtypes {', '.join(rep['dtypes'])}")  # fmt: skip
        lay = rep["layout"]
        st.write(f"**Layout** {lay['experts']} experts · {lay['quantization']} weights · "
                 f"{lay['files']} file(s){' + index' if lay['index'] else ''} · "
                 f"{rep['bytes']['total'] / 2**20:.2f} MiB stored")  # fmt: skip
        if rep["ok"]:
            st.success("Every Qwen3-MoE weight name and shape is as expected.")
        for key in ("missing", "unexpected"):
            if rep[key]:
                st.error(f"{len(rep[key])} {key} tensor(s)")
                st.code("\n".join(rep[key]))
        if rep["wrong_shape"]:
            st.error("Wrong shapes")
            st.dataframe(pd.DataFrame(rep["wrong_shape"]), hide_index=True)
        st.dataframe(pd.DataFrame([rep["params"]]), hide_index=True, width="stretch")
        plan = rep["plan"]
        st.markdown(f"Partition plan: {plan['devices']} devices, tp={plan['tp']}, ep={plan['ep']}, "
                    f"each expert's intermediate dim split over {plan['expert_tp']}")  # fmt: skip
        st.dataframe(pd.DataFrame(plan["shards"]), hide_index=True, width="stretch")
        rows = [{"device": d["device"], "tp rank": d["tp_rank"], "ep rank": d["ep_rank"],
                 "experts": "-".join(map(str, d["experts"])), "GiB": d["bytes"] / 2**30,
                 **{f"{k} MiB": v / 2**20 for k, v in d["by_category_bytes"].items()}} for d in plan["per_device"]]  # fmt: skip
        st.caption("Per-device memory (MiB per category, GiB total)")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
