"""Benchmark: a toggle on the Activations page, from click to the new surface drawn in the browser.

A msit-layout dump holding one 2000 x 6144 bf16 decoder-layer output (seeded synthetic normal
values with planted outlier channels and a massive activation; labelled synthetic) is ingested
into a fresh workspace, the studio is started as the browser tests start it
(tests/e2e/conftest.py) and headless Chromium (SwiftShader WebGL, ENVIRONMENT.md flags) opens the
surface. Each repetition clicks one toggle ("Absolute values |x|" or "Sort channels by absmax",
interleaved) and times click -> the plotly.js figure in the page carries the new state (its value
axis title / channel axis title) -> two animation frames later (the frame with the new surface is
drawn). Median and min/max reported. Each toggle is clicked two ways, interleaved: in the sidebar
(a Streamlit rerun sends the new state to the surface component) and in the surface component's
own toggle bar (applied in the browser; the server follows afterwards). After every click the
bench waits for the page's rerun to finish, so each click starts from a quiet page.

``--baseline REPO`` starts a second studio from another checkout (e.g. a ``git worktree`` of
main) on the same workspace and toggles both pages in turn (interleaved), so the two versions are
timed under the same load. ``--query`` adds deep-link keys to both (e.g. ``grid=400x800``).

    python bench/activations_ui.py [--tokens 2000] [--channels 6144] [--repeat 6]
        [--baseline /path/to/main-worktree] [--query grid=400x800]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tests.e2e.conftest as e2e  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_FLAGS, StudioServer, wait_for_app  # noqa: E402

MODULE = "model.layers.0"


def write_dump(root: Path, tokens: int, channels: int) -> Path:
    """msit_llm layout (REFERENCE.md section 1): one rank, one decoder layer's output."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((tokens, channels)).astype(np.float32)
    x[:, [7, 1234]] *= 40.0
    x[0, 1234] = -3000.0
    session = root / "msit_dump_20261206_120000"
    d = session / "torch_tensors" / "npu0_1000" / "0" / f"root.{MODULE}"
    d.mkdir(parents=True)
    torch.save(torch.from_numpy(x).to(torch.bfloat16), d / "output.pth")
    cfg = {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": channels,
           "num_hidden_layers": 1, "num_attention_heads": 48, "num_key_value_heads": 8,
           "head_dim": 128, "intermediate_size": 4 * channels}  # fmt: skip
    (session / "config.json").write_text(json.dumps(cfg))
    return session


DRAWN = """([axis, want]) => new Promise((resolve, reject) => {
  const t0 = performance.now();
  // The plot is in the page (st.plotly_chart) or in a same-origin component iframe.
  const find = () => document.querySelector('.js-plotly-plot') || [...document.querySelectorAll('iframe')]
    .map(f => { try { return f.contentDocument.querySelector('.js-plotly-plot'); } catch (e) { return null; } })
    .find(Boolean);
  const ok = () => {
    const gd = find();
    const t = gd && gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene[axis].title.text;
    return t === want;
  };
  const done = () => {
    const t1 = performance.now();
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(
      [t1 - t0, performance.now() - t1, performance.timeOrigin + performance.now()])));
  };
  const poll = () => {
    if (ok()) return done();
    if (performance.now() - t0 > 120000) {
      const gd = find();
      const got = gd && gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene[axis].title.text;
      return reject(new Error(`no ${axis} titled ${want} after 120 s (it is ${got})`));
    }
    requestAnimationFrame(poll);
  };
  poll();
})"""

# toggle label -> (scene axis that shows the state, its title when on, its title when off)
TOGGLES = {
    "Absolute values |x|": ("zaxis", "|value|", "value"),
    "Sort channels by absmax": ("xaxis", "channel rank", "channel"),
}
# The same toggles in the surface component's own bar (studio_ui/components/surface/frontend).
COMPONENT = "iframe[title='studio_ui.components.surface.studio_surface']"
COMPONENT_BOX = {"Absolute values |x|": "#t-abs", "Sort channels by absmax": "#t-sort"}


# In-browser click time (epoch ms, comparable across the page and its iframe): a capture
# listener in the document that gets the click, so Playwright's own round trips are excluded.
MARK_CLICK = """() => { window.__clickAt = null; document.addEventListener('click',
  () => { window.__clickAt = performance.timeOrigin + performance.now(); },
  {capture: true, once: true}); }"""


def has_component_toggles(page) -> bool:
    return page.frame_locator(COMPONENT).locator("#t-abs").count() > 0


def start_server(repo: Path, ws: Path, log: Path) -> StudioServer:
    """A studio from checkout ``repo`` (its own code first on the path) on workspace ``ws``."""
    saved = e2e.REPO, os.environ.get("PYTHONPATH")
    e2e.REPO = repo
    os.environ["PYTHONPATH"] = f"{repo}:{repo / 'kernels'}"
    try:
        server = StudioServer(ws, log)
    finally:
        e2e.REPO = saved[0]
        if saved[1] is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved[1]
    server.wait_ready()
    return server


def open_surface(browser, server: StudioServer, extra: dict[str, str]):
    """Open the surface of the benchmark tensor; returns (page, seconds to the first frame)."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(120_000)
    query = urllib.parse.urlencode({"pattern": rf"^{MODULE}$", "io": "output", **extra})
    t0 = time.perf_counter()
    page.goto(f"{server.url}/activations?{query}")
    wait_for_app(page)
    page.evaluate(DRAWN, ["zaxis", TOGGLES["Absolute values |x|"][2]])
    return page, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=6144)
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--baseline", type=Path, help="another checkout to time in the same run")
    ap.add_argument("--query", action="append", default=[], help="deep-link key=value")
    args = ap.parse_args()
    extra = dict(q.split("=", 1) for q in args.query)
    load0 = os.getloadavg()
    from playwright.sync_api import sync_playwright

    from studio_backend.dumps.ingest import ingest_dump
    from studio_backend.workspace import open_workspace

    versions = {"this checkout": REPO}
    if args.baseline:
        versions[f"baseline {args.baseline}"] = args.baseline.resolve()
    ways = [(v, w) for v in versions for w in ("sidebar", "component")]
    times = {vw: {k: [] for k in TOGGLES} for vw in ways}
    inpage = {vw: {k: [] for k in TOGGLES} for vw in ways}
    draws = {vw: {k: [] for k in TOGGLES} for vw in ways}
    loads = [load0]
    first: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        session = write_dump(tmp / "dump", args.tokens, args.channels)
        ws = open_workspace(tmp / "ws")
        ingest_dump(ws, session)
        ws.close()
        servers = {}
        try:
            for i, (name, repo) in enumerate(versions.items()):
                # A workspace is opened by one process at a time (DuckDB): one copy each.
                ws_dir = tmp / "ws" if i == 0 else shutil.copytree(tmp / "ws", tmp / f"ws{i}")
                servers[name] = start_server(repo, ws_dir, tmp / f"studio{i}.log")
            with sync_playwright() as pw:
                # One browser per version: a page that is not in front may get no animation
                # frames, and the two must not share a renderer or GPU process either.
                browsers = [
                    pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
                    for _ in servers
                ]
                pages = {}
                for browser, (name, server) in zip(browsers, servers.items(), strict=True):
                    pages[name], first[name] = open_surface(browser, server, extra)
                state = {v: dict.fromkeys(TOGGLES, False) for v in versions}
                component = {n: has_component_toggles(p) for n, p in pages.items()}
                for _ in range(args.repeat):
                    for label, (axis, on, off) in TOGGLES.items():  # interleaved
                        for way in ("sidebar", "component"):
                            for name, page in pages.items():
                                if way == "component" and not component[name]:
                                    continue
                                state[name][label] = not state[name][label]
                                want = on if state[name][label] else off
                                if way == "sidebar":
                                    target = page.get_by_text(label, exact=True)
                                    where = page.main_frame
                                else:
                                    box = COMPONENT_BOX[label]
                                    target = page.frame_locator(COMPONENT).locator(box)
                                    where = next(
                                        f for f in page.frames if "studio_surface" in f.url
                                    )
                                where.evaluate(MARK_CLICK)
                                t = time.perf_counter()
                                target.click()
                                _, draw_ms, drawn_at = page.evaluate(DRAWN, [axis, want])
                                times[name, way][label].append(time.perf_counter() - t)
                                clicked = where.evaluate("() => window.__clickAt")
                                if way == "component":
                                    split = where.evaluate("() => window.__lastDraw")
                                    print(f"  in the component: build {split['build']:.0f} ms, "
                                          f"Plotly.react {split['react']:.0f} ms", flush=True)  # fmt: skip
                                inpage[name, way][label].append((drawn_at - clicked) / 1000)
                                draws[name, way][label].append(draw_ms / 1000)
                                print(f"{name} {way} {label} -> {want}: "
                                      f"{times[name, way][label][-1]:.2f} s, in the browser "
                                      f"{inpage[name, way][label][-1]:.2f} s", flush=True)  # fmt: skip
                                # The component reports its state after the frame: let the
                                # server's rerun (and the sidebar's) finish before the next.
                                page.wait_for_timeout(500)
                                wait_for_app(page)
                                loads.append(os.getloadavg())
                for browser in browsers:
                    browser.close()
        finally:
            for server in servers.values():
                server.stop()
    one = [m[0] for m in loads]
    print(f"load average at start {load0}; 1-min load during the clicks "
          f"{min(one):.1f}-{max(one):.1f} (median {statistics.median(one):.1f})")  # fmt: skip
    print(f"tensor {args.tokens} x {args.channels} bf16; deep link extras {extra or 'none'}; "
          f"load average {os.getloadavg()}")  # fmt: skip
    for name in versions:
        print(f"{name}: first paint {first[name]:.2f} s")
    for (name, way), per in times.items():
        if not any(per.values()):
            continue
        print(f"{name}, {way} toggles:")
        for label, ts in per.items():
            ib = inpage[name, way][label]
            print(f"  toggle {label!r}: in the browser (click event -> drawn) median "
                  f"{statistics.median(ib):.3f} s (min {min(ib):.3f}, max {max(ib):.3f}); "
                  f"Playwright click() -> drawn median {statistics.median(ts):.3f} s "
                  f"(min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)}); of which the last "
                  f"step, new figure in the page -> drawn frame: median "
                  f"{statistics.median(draws[name, way][label]):.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
