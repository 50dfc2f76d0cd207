"""Seed 003's module trace on the REAL vLLM: launch it, trace one step on every rank, store.

The studio launches real vLLM (engine ``vllm``) with ``STUDIO_TRACE_MODULES_CONFIG`` in its
environment; the studio's plugin then records, after warm-up, every module call of the
wanted forward step in each worker (``studio_backend.launch.vllm_dumpers.install_trace``). One
request with the prompt runs ``step + 1`` forwards (step 0 = the prefill, 1 = the first
decode step), the server is stopped, and each rank's calls become one stored trace.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from studio_backend.errors import InputError, StudioError
from studio_backend.launch.spec import LaunchSpec
from studio_backend.trace.ingest import store_trace
from studio_backend.trace.module_tracer import ModuleCall
from studio_backend.workspace import Workspace

READY_TIMEOUT_S = 900.0  # a cold start with TP=4 on two loaded cores takes minutes


@dataclass
class VllmTraceOptions:
    tp: int = 1
    step: int = 0  # 0: the prefill; N: the N-th decode step
    port: int = 8029
    python: str | None = None
    dtype: str = "auto"
    max_model_len: int = 256


def _complete(base_url: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True}  # fmt: skip
    req = urllib.request.Request(  # noqa: S310 - the loopback server we launched
        f"{base_url}/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as r:  # noqa: S310
        return json.loads(r.read())


def _post(url: str) -> None:
    req = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 - our loopback server
    with urllib.request.urlopen(req, timeout=600) as r:  # noqa: S310
        r.read()


def _serve_once(
    ws: Workspace,
    model_dir: Path,
    opts: VllmTraceOptions,
    env: dict[str, str],
    files: dict[str, str],
    extra_args: tuple[str, ...],
    run: Any,
) -> Any:
    """Launch real vLLM with ``env``/``files`` added, call ``run(base_url)``, always stop it.
    Returns the launch row (its log stays in the workspace)."""
    from studio_backend.launch.supervisor import Supervisor

    spec = LaunchSpec(
        engine="vllm", model_dir=str(model_dir), tp=opts.tp, port=opts.port,
        max_model_len=opts.max_model_len, dtype=opts.dtype, python=opts.python,
        extra_args=extra_args,
    )  # fmt: skip
    sup = Supervisor(ws, reattach=False)  # watch only this launch (a page may run its own)
    launch = None
    try:
        prepared = sup.prepare(spec)
        prepared[2].env.update(env)
        prepared[2].files.update(files)
        launch = sup.start(spec, prepared=prepared)
        launch = sup.wait_status(launch.launch_id, ("ready",), READY_TIMEOUT_S)
        if launch.status != "ready":
            raise StudioError(f"vLLM did not start ({launch.status}): {launch.message}")
        try:
            run(launch.base_url)
        except urllib.error.HTTPError as exc:  # the server answered, but failed: its log says why
            raise StudioError(
                f"vLLM answered {exc.code} {exc.reason} to {exc.url}; its log says why: "
                f"{launch.log_path} (`studio launches --log {launch.launch_id}`; a worker the "
                "system killed for memory shows there as 'died unexpectedly (exit code: -9)')"
            ) from exc
    finally:
        if launch is not None and sup.get(launch.launch_id).active:
            sup.stop(launch.launch_id)
        if launch is not None:
            launch = sup.get(launch.launch_id)
        sup.close()
    return launch


def _log_tail(launch: Any) -> str:
    return "\n".join(Path(launch.log_path).read_text(errors="replace").splitlines()[-20:])


def trace_vllm(
    ws: Workspace, model_dir: Path, prompt: str, opts: VllmTraceOptions, name: str | None = None
) -> list[tuple[str, list[ModuleCall]]]:
    """[(trace id, calls)] per rank, rank 0 first, for step ``opts.step`` of ``prompt``."""
    from studio_backend.launch.vllm_plugin import TRACE_ENV

    if opts.step < 0:
        raise InputError(f"step {opts.step}", "must be 0 (prefill) or a decode step number")
    out_dir = ws.root / "vllm_traces" / time.strftime("T%Y%m%d-%H%M%S")
    cfg_path = out_dir / "trace_config.json"
    cfg = json.dumps({"out_dir": str(out_dir), "steps": [opts.step]})
    launch = _serve_once(
        ws, model_dir, opts, {TRACE_ENV: str(cfg_path)}, {str(cfg_path): cfg}, (),
        lambda url: _complete(url, str(model_dir), prompt, opts.step + 1),
    )  # fmt: skip
    files = [out_dir / f"calls_rank{r}_step{opts.step}.pt" for r in range(opts.tp)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise StudioError(
            f"the plugin wrote no trace for {', '.join(missing)} (is the studio installed in "
            f"vLLM's venv, so its plugin loads?); server log {launch.log_path}:\n{_log_tail(launch)}"
        )
    out = []
    for rank, f in enumerate(files):
        calls = [ModuleCall(**c) for c in torch.load(f, weights_only=True)]
        label = (name or model_dir.name) + f" (vLLM tp={opts.tp}, rank {rank}, step {opts.step})"
        trace_id = store_trace(ws, calls, name=label, model=str(model_dir), prompt=prompt)
        out.append((trace_id, calls))
    return out


def profile_vllm(
    ws: Workspace,
    model_dir: Path,
    prompt: str,
    max_tokens: int,
    opts: VllmTraceOptions,
    name: str | None = None,
    out_dir: Path | None = None,
) -> list[tuple[str, Path]]:
    """vLLM's own torch profiler (``--profiler-config``, ``/start_profile`` ... ``/stop_profile``)
    around one request, modules annotated by the plugin; [(profile id, trace file)] per rank.

    ``out_dir``: where vLLM writes its traces (under ``torch/``); default a new folder in
    the workspace's ``vllm_profiles/``."""
    from studio_backend.launch.vllm_plugin import ANNOTATE_ENV
    from studio_backend.trace.ingest import ingest_profile

    if max_tokens < 1:
        raise InputError(f"max tokens {max_tokens}", "must be at least 1")
    if out_dir is None:
        out_dir = ws.root / "vllm_profiles" / time.strftime("P%Y%m%d-%H%M%S")
    elif out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a directory (--out takes a directory)")
    cfg_path = out_dir / "annotate.json"
    profiler = {"profiler": "torch", "torch_profiler_dir": str(out_dir / "torch")}

    def run(url: str) -> None:
        _post(f"{url}/start_profile")
        _complete(url, str(model_dir), prompt, max_tokens)
        _post(f"{url}/stop_profile")

    launch = _serve_once(
        ws, model_dir, opts, {ANNOTATE_ENV: str(cfg_path)},
        {str(cfg_path): json.dumps({"out_dir": str(out_dir)})},
        ("--profiler-config", json.dumps(profiler)), run,
    )  # fmt: skip
    traces = sorted((out_dir / "torch").rglob("*.pt.trace.json*"))
    if not traces:
        raise StudioError(
            f"vLLM wrote no torch profiler trace under {out_dir / 'torch'}; server log "
            f"{launch.log_path}:\n{_log_tail(launch)}"
        )
    out = []
    for trace in traces:
        label = (name or model_dir.name) + f" (vLLM tp={opts.tp}, {trace.name.split('.')[0]})"
        out.append((ingest_profile(ws, trace, name=label), trace))
    return out
