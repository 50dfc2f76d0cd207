"""Activations: 3D token x channel surfaces, outlier statistics, run comparison, Kronecker view."""

from __future__ import annotations

import importlib.util
import re

import pandas as pd
import streamlit as st

from studio_backend.analysis import finder, kronecker, lod, outliers, source
from studio_backend.analysis.source import Selected
from studio_backend.dumps.axis import describe as axis_describe
from studio_backend.dumps.axis import matrix_shape as axis_matrix
from studio_ui import services_activations as svc
from studio_ui.figures import activations as figs
from studio_ui.widgets import guarded

st.title("Activations")
st.caption(
    "Token x channel surfaces of dumped activations. Large tensors are reduced to a screen-sized "
    "grid by max-|x| pooling that keeps each block's signed extreme, so no outlier disappears; "
    "hover shows the exact token and channel of the value."
)

HOW_TO = """No activation dumps in this workspace yet. To get some:

1. Dump a run: `studio demo` (tiny model with planted outlier channels, tp=2 msit dump on the
   reference engine), or use an msit / msprobe dump from vLLM-Ascend.
2. Ingest it on the **Dumps** page or with `studio ingest DUMP_DIR`.
3. Come back here: pick the run, a step and a module by layer pattern (e.g. `layers\\.1\\.`)."""

# Surface detail: the drawn-cell budget of the pooled grid. The redraw time follows the cell
# count (docs/PERFORMANCE.md "Activations page interaction"); 80k draws in well under a second
# even with software WebGL.
CELLS = {"20k": 20_000, "80k": 80_000, "320k": 320_000, "720k": 720_000}
DEFAULT_CELLS = "80k"

qp = st.query_params
# Snapshot of the deep link as it arrived: widgets take their defaults from it, while qp is
# rewritten below to describe the current view (so the URL can be shared at any time).
link = {k: qp.get(k) for k in qp}


def _pick(label: str, options: list, key: str, *, fmt=str, container=st):
    """A selectbox whose default comes from the deep link (?key=value) when it is valid."""
    wanted = link.get(key)
    index = next((i for i, o in enumerate(options) if str(o) == wanted), 0)
    return container.selectbox(label, options, index=index, format_func=fmt, key=f"act_{key}")


def _csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode()


def _downloads(fig, name: str, *, grid=None, title: str = "", sync: bool = False,
               png_opts: dict | None = None) -> None:  # fmt: skip
    c1, c2 = st.columns(2)
    c1.download_button(
        "Download HTML",
        # Built only when clicked (a few MB of inlined plotly.js), not on every rerun.
        lambda: figs.figure_html(fig() if callable(fig) else fig, sync_cameras=sync),
        file_name=f"{name}.html",
        mime="text/html",
        key=f"html_{name}",
    )
    if grid is not None and c2.button("Render PNG", key=f"png_{name}"):
        import tempfile
        from pathlib import Path

        from studio_ui.figures import vtk_scene

        with tempfile.TemporaryDirectory() as d:
            png = vtk_scene.screenshot(
                grid, Path(d) / "s.png", title=title, **(png_opts or {})
            ).read_bytes()
        c2.download_button("Download PNG", png, file_name=f"{name}.png", mime="image/png")


def _from_surface() -> None:
    """Callback (before the rerun): a toggle in the surface component, already drawn in the
    browser, becomes the page's state (sidebar toggles, deep link, exports, other tabs)."""
    v = st.session_state.get("surf_main")
    if isinstance(v, dict):
        for name in ("abs", "log", "sort"):
            st.session_state[f"act_{name}"] = bool(v.get(name))
        st.session_state["act_surf_seq"] = int(v.get("seq", 0))


def _surface(grid, base, *, title, texts, absolute, log, sort, renderer, key):
    """``grid``: in the view's state (PyVista, exports); ``base``: the same grid untransformed
    and unsorted (the component applies the toggles in the browser)."""
    if renderer == "PyVista":
        from stpyvista import stpyvista  # only importable inside a running app

        from studio_ui.figures import pyvista_surface as pvs

        stpyvista(
            pvs.plotter(
                grid,
                title=title,
                absolute=absolute,
                label=figs.value_label(absolute, log),
            ),
            key=f"pv_{key}",
        )
        st.caption(
            f"{title}: long axis = channels ({grid.source_shape[1]}), short axis = tokens "
            f"{int(grid.token_axis[0])}+ ({grid.source_shape[0]}), height = value. "
            "Hover values and exact positions are in the Plotly view."
        )
    else:
        from studio_ui.components.surface import surface_chart

        # One persistent plot (Plotly.react in place): a toggle keeps the WebGL context. The
        # grid travels once; |x|, log and sort are applied in the browser (no round trip).
        surface_chart(
            base, title=title, texts=texts, key=f"surf_{key}", on_change=_from_surface,
            state={"abs": absolute, "log": log, "sort": sort},
            seq=st.session_state.get("act_surf_seq", 0), config={"displaylogo": False},
        )  # fmt: skip
        # The export's figure, built only when the download is clicked.
        return lambda: figs.surface_figure(
            grid, title=title, token_text=texts, absolute=absolute, log=log, sorted_channels=sort
        )
    return None


def _jump(target: dict) -> None:
    """Button callback (runs before the rerun): point the deep link at ``target`` and drop the
    selection widgets' state so they take their values from it, on the Surface tab."""
    st.query_params.from_dict(target)
    for key in (
        "act_step",
        "act_pattern",
        "act_io",
        "act_module",
        "act_idx",
        "act_part",
        "act_tab",
    ):
        st.session_state.pop(key, None)
    st.session_state["act_tab_default"] = target.get("tab")  # None: the Surface tab


def _finder(run_id: str, step: int) -> None:
    """The run's tensors ranked by stored statistics, with a jump to a tensor's surface."""
    c1, c2, c3 = st.columns([1, 1, 1])
    by = c1.radio("Rank by", list(finder.METRICS), horizontal=True, key="find_by")
    scope = c2.radio("Steps", [f"step {step}", "all steps"], horizontal=True, key="find_scope")
    n = c3.number_input("Show", 5, 500, 25, step=5, key="find_n")
    ranked = svc.ranked(run_id, by, step if scope != "all steps" else None, int(n))
    if ranked.empty:
        st.info("No statistics stored for this run yet (they are computed at ingest).")
        return
    st.caption(
        "From the statistics stored at ingest (no tensor is loaded): max |x|, massive "
        "activations (|x| > 100 and > 1000x their token's median |x|), excess kurtosis "
        "(Gaussian = 0). A decoder layer's output 0 is the hidden state, output 1 the residual."
    )
    table = ranked.drop(columns=["tensor_id"])
    table["shape"] = table["shape"].map(lambda v: "x".join(str(int(d)) for d in v))
    st.dataframe(table, hide_index=True, width="stretch", key="find_table")
    labels = [
        f"{i + 1}. {r.module} {r.io} {finder.index_label(r.module, r.io, int(r.idx))} step {r.step}"
        for i, r in enumerate(ranked.itertuples())
    ]
    pick = st.selectbox(
        "Tensor", range(len(labels)), format_func=labels.__getitem__, key="find_pick"
    )
    r = ranked.iloc[int(pick)]
    st.button(
        "Show its surface", type="primary", key="find_go", on_click=_jump,
        args=({"run": run_id, "step": int(r.step), "pattern": f"^{re.escape(r.module)}$",
               "io": r.io, "module": r.module, "idx": int(r.idx)},),
    )  # fmt: skip


def _dumps_available() -> bool:
    try:
        return importlib.util.find_spec("studio_backend.dumps.query") is not None
    except ModuleNotFoundError:  # the dumps package is not installed in this build
        return False


if not _dumps_available():
    st.info(HOW_TO)
    st.stop()

with guarded("Reading the dump runs"):
    runs = svc.runs()
    if runs.empty:
        st.info(HOW_TO)
        st.stop()

    side = st.sidebar
    side.header("Selection")
    run_ids = runs["run_id"].tolist()
    names = dict(zip(runs["run_id"], runs["name"], strict=True))
    run_id = _pick("Run", run_ids, "run", fmt=lambda r: f"{names[r]} ({r})", container=side)
    all_rows = svc.rows(run_id, None, None, None)
    steps = sorted(int(s) for s in all_rows["step"].unique())
    if not steps:
        tool = svc.tool_stats(run_id)
        if tool.empty:
            st.warning(
                "This run has no stitched tensors yet (still ingesting, or stitching failed)."
            )
        else:
            st.info(
                "A statistics-only dump (msprobe `task: statistics` / msit "
                "`dump_statistics_mode=1`): the tool wrote Max, Min, Mean and Norm per tensor and "
                "no tensors, so there is no surface. Its statistics:"
            )
            st.plotly_chart(figs.tool_stats_figure(tool), key="tool_stats_fig")
            st.dataframe(tool.drop(columns=["source_file"]), hide_index=True, width="stretch")
            st.download_button("Download CSV", _csv(tool), "tool_statistics.csv", "text/csv")
        st.stop()
    step = _pick("Step (0 = prefill)", steps, "step", container=side)
    pattern = side.text_input(
        "Layer pattern (regex)",
        value=link.get("pattern", r"layers\.0\."),
        help="Searched in module names, like visualize_outliers.py --layer_pattern.",
        key="act_pattern",
    )
    io = side.radio(
        "io",
        ["output", "input"],
        index=int(link.get("io") == "input"),
        horizontal=True,
        key="act_io",
    )
    rows = svc.rows(run_id, step, pattern or None, io)
    missing = svc.not_stitched(run_id, step, pattern or None, io)
    if not missing.empty:
        st.error(
            f"{len(missing)} {io} tensor(s) of step {step} did not stitch ("
            + ", ".join(f"{r.module} {r.verdict}" for r in missing.head(5).itertuples())
            + "): no stitched tensor exists, so they are not shown. The Dumps page lists each "
            "rank's tensor."
        )
    floating = rows[~rows["dtype"].astype(str).str.contains("int")]
    modules = sorted(
        set(floating["module"]), key=lambda m: (floating[floating.module == m].layer.min(), m)
    )
    if not modules:
        st.warning(
            f"No {io} tensor of step {step} matches `{pattern}`. Try `layers\\.0\\.` or empty."
        )
        st.stop()
    module = _pick("Module", modules, "module", container=side)
    mrows = floating[floating["module"] == module]
    idxs = sorted(int(i) for i in mrows["idx"].unique())
    idx = (
        _pick("Index", idxs, "idx", container=side,
              fmt=lambda i: finder.index_label(module, io, int(i)))
        if len(idxs) > 1 else idxs[0]
    )  # fmt: skip
    if len(idxs) == 1 and finder.role(module, io, int(idx)):
        side.caption(f"{io} {idx}: {finder.role(module, io, int(idx))}")
    cfg = svc.config(run_id)
    part_opts = source.available_parts(rows, module, io, idx, cfg)
    part = _pick("Part", ["whole", *part_opts], "part", container=side) if part_opts else "whole"
    sel = Selected(run_id, int(step), module, io, int(idx), None if part == "whole" else part)
    qp.from_dict(
        {"run": run_id, "step": step, "pattern": pattern, "io": io, "module": module,
         "idx": idx, "part": part, **({"tokenizer": link["tokenizer"]} if link.get("tokenizer") else {})}
    )  # fmt: skip

    side.header("View")
    renderer = side.radio("Renderer", ["Plotly (WebGL)", "PyVista"], horizontal=True)
    # One state for the view toggles: these keys. The deep link seeds them; the surface
    # component's own toggles write them (_from_surface) before the rerun.
    for name in ("abs", "log", "sort"):
        st.session_state.setdefault(f"act_{name}", link.get(name) == "1")
    absolute = side.toggle("Absolute values |x|", key="act_abs")
    log = side.toggle("Log scale log10(1+|x|)", key="act_log")
    sort = side.toggle("Sort channels by absmax", key="act_sort")
    for name, on in (("abs", absolute), ("log", log), ("sort", sort)):
        if on:
            qp[name] = "1"
        elif name in qp:
            del qp[name]
    chan_spec = side.text_input("Channel filter", "", help="e.g. 0-127, 300, 4000-4095")
    cells_label = side.select_slider(
        "Surface detail (drawn cells)", list(CELLS),
        value=link.get("cells") if link.get("cells") in CELLS else DEFAULT_CELLS, key="act_cells",
        help="Cells of the max-|x| pooled grid. Fewer draw faster; no extreme is lost either way "
        "(each cell keeps its block's signed extreme and its exact token and channel).",
    )  # fmt: skip
    if cells_label != DEFAULT_CELLS:
        qp["cells"] = cells_label
    # Pre-filled with the folder the run was made from when the workspace knows it (its launch,
    # the demo's model, or config's _name_or_path); a deep link's tokenizer wins. One key per
    # run: another run brings its own default, a typed folder stays with its run.
    tok_dir = side.text_input(
        "Tokenizer directory (optional)",
        link.get("tokenizer") or svc.default_tokenizer(run_id),
        help="A folder with tokenizer.json: hover and tables then show each token's text. "
        "Pre-filled with the model folder the run was made from when the workspace knows it.",
        key=f"act_tokenizer:{run_id}",
    )

    # Token axis: decided at ingest from the format, the module and config.json; overridable.
    auto = svc.axis(sel)
    shape = svc.shape(sel)  # a tensor on another Ray node is not moved for its shape
    ks = list(range(len(shape) + 1))
    want = link.get("axis")
    k_default = (
        int(want) if want is not None and want.isdigit() and int(want) in ks else auto.token_dims
    )
    token_dims = side.selectbox(
        "Token axis", ks, index=ks.index(min(k_default, len(shape))), key="act_axis",
        format_func=lambda k: f"{axis_describe(shape, k)} -> {axis_matrix(shape, k)[0]} tokens x {axis_matrix(shape, k)[1]} channels",
        help="Which leading dims index tokens (the rest are channels). Hugging Face models dumped "
        "by msit/msprobe hold [batch, seq, hidden]; vLLM [tokens, hidden]; q_norm/k_norm "
        "[..., heads, head_dim].",
    )  # fmt: skip
    side.caption(
        f"Stored: **{auto.layout}** ({auto.source}{': ' + auto.reason if auto.reason else ''})"
    )
    if token_dims != auto.token_dims:
        qp["axis"] = str(token_dims)
        if side.button("Save for this module", key="act_axis_save",
                       help="Store the override (statistics, render and other views use it)"):  # fmt: skip
            svc.save_axis(run_id, f"^{re.escape(module)}$", int(token_dims))
            st.rerun()
    elif auto.source == "override" and side.button("Back to automatic", key="act_axis_auto"):
        svc.save_axis(run_id, f"^{re.escape(module)}$", None)
        st.rerun()

    n_tok, n_ch = svc.matrix_shape(sel, int(token_dims))
    st.caption(
        f"`{sel.label}`: shape {list(shape)} viewed as {axis_describe(shape, int(token_dims))} = "
        f"{n_tok} tokens x {n_ch} channels."
        + (" It lies on another Ray node: each view below is computed there and only its "
           "result comes here." if svc.remote(sel) else "")
    )  # fmt: skip
    t_range = (0, n_tok)
    if n_tok > 1:
        t_range = side.slider("Token range", 0, n_tok, (0, n_tok), key="act_tokens")
    # Grid for the cell budget (tokens x channels); the other tabs' surfaces take half of it.
    res = lod.grid_shape(max(1, t_range[1] - t_range[0]), n_ch, CELLS[cells_label])
    texts = None
    if tok_dir.strip():
        with guarded("Loading token text"):
            texts = svc.token_texts(run_id, int(step), tok_dir.strip())
            if texts is not None and len(texts) != n_tok:
                texts = None  # the embedding input does not describe these rows

    # Lazy tabs: only the open tab's code runs, so a toggle or a module switch redraws only
    # what is shown (the others compute when opened).
    TABS = ["Surface", "Statistics", "Outlier finder", "Compare", "Kronecker"]
    # The deep link's tab is the default for the whole session: a default that changed between
    # reruns (the URL follows the open tab) would give st.tabs a new identity and snap it back
    # to that tab, losing the user's click on another one.
    first_tab = st.session_state.setdefault(
        "act_tab_default", link["tab"] if link.get("tab") in TABS else None
    )
    tabs = st.tabs(TABS, key="act_tab", on_change="rerun", default=first_tab)
    tab_surf, tab_stats, tab_find, tab_cmp, tab_kron = tabs
    shown = next((name for name, t in zip(TABS, tabs, strict=True) if t.open), "Surface")
    if shown != "Surface":
        qp["tab"] = shown

    if tab_surf.open:
        with tab_surf, guarded("Building the surface"):
            grid_args = dict(
                max_tokens=res[0], max_channels=res[1],
                token_range=(t_range[0], max(t_range[1], t_range[0] + 1)),
            )  # fmt: skip
            base = svc.surface_grid(sel, int(token_dims), chan_spec, **grid_args)
            g = svc.surface_grid(sel, int(token_dims), chan_spec, sort_channels=sort,
                                 absolute=absolute, log=log, **grid_args)  # fmt: skip
            fig = _surface(g, base, title=sel.label, texts=texts, absolute=absolute, log=log,
                           sort=sort, renderer=renderer.split()[0], key="main")  # fmt: skip
            s = svc.summary(sel, int(token_dims), t_range[0], t_range[1])
            cols = st.columns(6)
            cols[0].metric("max |x|", f"{s.absmax:.4g}")
            cols[1].metric("top channel", s.top_channel)
            cols[2].metric("kurtosis", f"{s.kurtosis:.3g}")
            cols[3].metric("|x| > 6", f"{s.over_6:,}")
            cols[4].metric(
                "massive", f"{s.massive:,}", help="|x| > 100 and > 1000x its token's median |x|"
            )
            cols[5].metric("max / median", f"{s.top_to_median:.3g}")
            if s.nan or s.inf:
                st.warning(
                    f"{s.nan:,} NaN and {s.inf:,} +-inf values in this tensor: their cells are "
                    "holes in the surface, marked by magenta diamonds (NaN at zero height, inf at "
                    "the top / bottom; hover one for its token and channel), and max |x| reads "
                    "nan / inf. Statistics -> Top outliers lists them first."
                )
            if fig is not None:
                _downloads(fig, "surface", grid=g, title=sel.label, png_opts={
                    "absolute": absolute, "sorted_channels": sort,
                    "label": figs.value_label(absolute, log)})  # fmt: skip

    if tab_stats.open:
        with tab_stats, guarded("Computing statistics"):
            k = st.number_input("Top K", 5, 200, 20, step=5)
            top = svc.top_k(sel, int(token_dims), t_range[0], t_range[1], int(k))
            if texts is not None:
                top.insert(1, "text", [texts[i] for i in top["token"]])
            note = outliers.non_finite_note(top["value"])
            if (note != "").any():
                top["non-finite"] = note  # the table shows a NaN value as None
            st.subheader("Top outliers")
            st.dataframe(top, hide_index=True, width="stretch")
            st.download_button("Download CSV", _csv(top), "top_outliers.csv", "text/csv")
            st.subheader("Top channels by absmax")
            chans = svc.channel_table(sel, int(token_dims), t_range[0], t_range[1], int(k))
            if texts is not None:
                chans.insert(3, "text", [texts[i] for i in chans["token"]])
            st.dataframe(chans, hide_index=True, width="stretch")
            st.download_button(
                "Download CSV", _csv(chans), "top_channels.csv", "text/csv", key="dl_chans"
            )
            st.plotly_chart(
                figs.profile_figure(svc.channel_absmax(sel, int(token_dims))), key="profile"
            )
            st.subheader("Across layers")
            if st.toggle(
                f"Compute statistics of every {io} tensor of step {step}", key="act_layers"
            ):
                stats = svc.layer_stats(run_id, int(step), io)
                if stats.empty:
                    st.info("No floating-point tensors in this step.")
                else:
                    layered = stats[stats["layer"].notna()]
                    st.plotly_chart(figs.kurtosis_figure(layered), key="kurt")
                    kinds = sorted(layered["kind"].unique())
                    kind = st.selectbox("Persistence of outlier channels for", kinds,
                                        index=kinds.index(source.module_kind(module)) if source.module_kind(module) in kinds else 0)  # fmt: skip
                    kk = st.slider("Top-K channels", 4, 64, 16)
                    pers = svc.persistence(run_id, int(step), io, kind, kk)
                    if not pers.empty:
                        st.plotly_chart(
                            figs.persistence_figure(pers, title=f"{kind}: top-{kk} channels"),
                            key="pers",
                        )
                    table = stats.drop(columns=["tensor_id"])
                    st.dataframe(table, hide_index=True, width="stretch")
                    st.download_button(
                        "Download CSV", _csv(table), "layer_stats.csv", "text/csv", key="dl_layers"
                    )

    if tab_find.open:
        with tab_find, guarded("Ranking tensors"):
            _finder(run_id, int(step))

    if tab_cmp.open:
        with tab_cmp, guarded("Comparing"):
            st.caption(
                "B is compared against A as reference: relative errors divide by |A|. "
                "B starts as A's run, step, io and module each time A changes; pick another B."
            )
            # B follows A: when A (the sidebar's selection) changed since B was last drawn,
            # B's widgets drop their state and take A's values as defaults again.
            a_now = (run_id, int(step), io, module)
            if st.session_state.get("cmp_follows") != a_now:
                st.session_state["cmp_follows"] = a_now
                for key in ("cmp_run", "cmp_step", "cmp_io", "cmp_module"):
                    st.session_state.pop(key, None)
            c1, c2, c3, c4 = st.columns(4)
            run_b = c1.selectbox(
                "Run B", run_ids, index=run_ids.index(run_id), format_func=lambda r: names[r],
                key="cmp_run",
            )  # fmt: skip
            rows_b = svc.rows(run_b, None, None, None)
            steps_b = sorted(int(v) for v in rows_b["step"].unique())
            step_b = c2.selectbox(
                "Step B", steps_b, index=steps_b.index(step) if step in steps_b else 0,
                key="cmp_step",
            )  # fmt: skip
            io_b = c3.selectbox(
                "io B", ["output", "input"], index=["output", "input"].index(io), key="cmp_io"
            )
            cand = svc.rows(run_b, step_b, None, io_b)
            mods_b = sorted(set(cand["module"]))
            module_b = c4.selectbox(
                "Module B",
                mods_b,
                index=mods_b.index(module) if module in mods_b else 0,
                key="cmp_module",
            )
            sel_b = Selected(
                run_b,
                int(step_b),
                module_b,
                io_b,
                int(idx) if idx in set(cand[cand.module == module_b]["idx"]) else 0,
                sel.part,
            )
            if sel_b == sel:
                st.info("Pick a different run, step, module or io for B (e.g. BF16 vs W8A8).")
            else:
                shape_b = svc.matrix_shape(sel_b)
                if shape_b != (n_tok, n_ch):
                    st.warning(f"Shapes differ: A {(n_tok, n_ch)} vs B {shape_b}.")
                else:
                    kc = st.slider("K for top-K channel Jaccard", 1, 64, 10)
                    opts = dict(
                        max_tokens=res[0] // 2, max_channels=res[1] // 2, absolute=absolute, log=log
                    )
                    m, ga, gb, gd = svc.ab(sel, int(token_dims), sel_b, kc, **opts)
                    # Two rows: seven metrics in one row cut values such as "-0.049123".
                    mc = [*st.columns(4), *st.columns(4)]
                    mc[0].metric("cosine", f"{m.cosine:.6f}")
                    mc[1].metric("max abs err", f"{m.max_abs_error:.4g}")
                    mc[2].metric("max rel err", f"{m.max_rel_error:.4g}")
                    mc[4].metric("within 0.1 %", f"{m.within_0_1pct:.2%}")
                    mc[5].metric("within 0.5 %", f"{m.within_0_5pct:.2%}")
                    mc[6].metric(f"top-{kc} Jaccard", f"{m.topk_jaccard:.3f}")
                    mc[7].metric("absmax Spearman", f"{m.absmax_spearman:.3f}")
                    cfig = figs.compare_figure(
                        ga, gb, gd, labels=("A", "B"), absolute=absolute, log=log
                    )
                    st.components.v1.html(figs.figure_html(cfig, sync_cameras=True), height=450)
                    st.caption(f"A = {sel.label}; B = {sel_b.label}. Cameras move together.")
                    st.download_button(
                        "Download CSV",
                        _csv(pd.DataFrame([m.as_dict()])),
                        "comparison.csv",
                        "text/csv",
                        key="dl_cmp",
                    )
                    _downloads(cfig, "comparison", sync=True)

    if tab_kron.open:
        with tab_kron, guarded("Kronecker view"):
            kr = svc.rows(run_id, step, r"npu_kronecker_quant$", "input")
            if kr.empty:
                st.info(
                    "No `npu_kronecker_quant` api-mode dump in this step. Dump with msit "
                    "`mode=['api']` and the op in the hook list (seed 000, 5.3): its input_0 is "
                    "the activation, input_1 / input_2 the left / right transforms."
                )
            else:
                kmods = sorted(set(kr["module"]))
                kmod = st.selectbox("Kronecker call", kmods)
                ksel = [Selected(run_id, int(step), kmod, "input", i, None) for i in range(3)]
                fetch = not any(svc.remote(s) for s in ksel) or st.toggle(
                    "Download the whole tensors from their Ray node", key="act_kron_fetch",
                    help="This view needs the activation and both transforms themselves; they "
                    "lie on another node of the cluster and are moved here only on request.",
                )  # fmt: skip
                if not fetch:
                    st.info("These tensors lie on another Ray node (about "
                            f"{sum(svc.nbytes(s) for s in ksel) / 1e6:.1f} MB).")  # fmt: skip
                else:
                    raw, p1, p2 = (
                        svc.raw(Selected(run_id, int(step), kmod, "input", i, None))
                        for i in range(3)
                    )
                    outs = svc.rows(run_id, step, f"^{re.escape(kmod)}$", "output")
                    detected = None
                    if set(outs["idx"]) >= {0, 1}:
                        q, scale = (
                            svc.raw(Selected(run_id, int(step), kmod, "output", i, None))
                            for i in (0, 1)
                        )
                        detected = kronecker.detect_convention(raw, p1, p2, q, scale)
                    conventions = ["P1 @ x @ P2 (torch_npu docs)", "P1^T @ x @ P2 (FlatQuant code)"]
                    conv = st.radio(
                        "Left factor",
                        conventions,
                        index=int(bool(detected)),
                        horizontal=True,
                        help="Preselected from the op's own dumped output when it reproduces it.",
                    )
                    if detected is not None:
                        st.caption(
                            f"The dumped quantized output matches `{conventions[int(detected)]}`."
                        )
                    after = kronecker.apply(raw, p1, p2, left_transposed=conv == conventions[1])
                    ks = kronecker.stats(raw, after)
                    kc = st.columns(4)
                    kc[0].metric("absmax before", f"{ks.absmax_before:.4g}")
                    kc[1].metric("absmax after", f"{ks.absmax_after:.4g}")
                    kc[2].metric("kurtosis before", f"{ks.kurtosis_before:.3g}")
                    kc[3].metric("kurtosis after", f"{ks.kurtosis_after:.3g}")
                    st.caption(f"Per token, P1 {tuple(p1.shape)}, P2 {tuple(p2.shape)}.")
                    b1, b2 = st.columns(2)
                    opts = dict(
                        max_tokens=res[0] // 2, max_channels=res[1] // 2, absolute=absolute, log=log
                    )
                    gb4 = svc.grid(kronecker.as_tokens(raw), **opts)
                    ga4 = svc.grid(kronecker.as_tokens(after), **opts)
                    b1.plotly_chart(
                        figs.surface_figure(
                            gb4, title="before", absolute=absolute, log=log, height=480
                        ),
                        key="kb",
                    )
                    b2.plotly_chart(
                        figs.surface_figure(
                            ga4, title="after", absolute=absolute, log=log, height=480
                        ),
                        key="ka",
                    )
