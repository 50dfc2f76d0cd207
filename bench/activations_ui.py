"""Benchmark: a toggle on the Activations page, from click to the new surface drawn in the browser.

A msit-layout dump holding one 2000 x 6144 bf16 decoder-layer output (seeded synthetic normal
values with planted outlier channels and a massive activation; labelled synthetic) is ingested
into a fresh workspace, the studio is started as the browser tests start it
(tests/e2e/conftest.py) and headless Chromium (SwiftShader WebGL, ENVIRONMENT.md flags) opens the
surface. Each repetition clicks one toggle ("Absolute values |x|" or "Sort channels by absmax",
interleaved) and times click -> the plotly.js figure in the page carries the new state (its value
axis title / channel axis title) -> two animation frames later (the frame with the new surface is
drawn). Median and min/max reported.

    python bench/activations_ui.py [--tokens 2000] [--channels 6144] [--repeat 6]
"""

from __future__ import annotations

import argparse
import json
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


DRAWN = """([axis, want]) => new Promise(resolve => {
  const t0 = performance.now();
  const ok = () => {
    const gd = document.querySelector('.js-plotly-plot');
    const t = gd && gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene[axis].title.text;
    return t === want;
  };
  const done = () => {
    const t1 = performance.now();
    requestAnimationFrame(() => requestAnimationFrame(() => resolve([t1 - t0, performance.now() - t1])));
  };
  const poll = () => ok() ? done() : requestAnimationFrame(poll);
  poll();
})"""

# toggle label -> (scene axis that shows the state, its title when on, its title when off)
TOGGLES = {
    "Absolute values |x|": ("zaxis", "|value|", "value"),
    "Sort channels by absmax": ("xaxis", "channel rank", "channel"),
}
# Before issue 18 the value axis was titled x / |x| (--legacy-titles: to time that version).
LEGACY = {"Absolute values |x|": ("zaxis", "|x|", "x")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--channels", type=int, default=6144)
    ap.add_argument("--repeat", type=int, default=6)
    ap.add_argument("--legacy-titles", action="store_true")
    args = ap.parse_args()
    toggles = {**TOGGLES, **LEGACY} if args.legacy_titles else TOGGLES
    from playwright.sync_api import sync_playwright

    from backend.dumps.ingest import ingest_dump
    from backend.workspace import open_workspace

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        session = write_dump(tmp / "dump", args.tokens, args.channels)
        ws = open_workspace(tmp / "ws")
        ingest_dump(ws, session)
        ws.close()
        server = StudioServer(tmp / "ws", tmp / "studio.log")
        try:
            server.wait_ready()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.set_default_timeout(120_000)
                query = urllib.parse.urlencode({"pattern": rf"^{MODULE}$", "io": "output"})
                t0 = time.perf_counter()
                page.goto(f"{server.url}/activations?{query}")
                wait_for_app(page)
                page.evaluate(DRAWN, ["zaxis", toggles["Absolute values |x|"][2]])
                first = time.perf_counter() - t0
                times: dict[str, list[float]] = {k: [] for k in toggles}
                draws: dict[str, list[float]] = {k: [] for k in toggles}
                state = dict.fromkeys(toggles, False)
                for _ in range(args.repeat):
                    for label, (axis, on, off) in toggles.items():  # interleaved
                        state[label] = not state[label]
                        t = time.perf_counter()
                        page.get_by_text(label, exact=True).click()
                        _, draw_ms = page.evaluate(DRAWN, [axis, on if state[label] else off])
                        times[label].append(time.perf_counter() - t)
                        draws[label].append(draw_ms / 1000)
                        wait_for_app(page)
                browser.close()
        finally:
            server.stop()
    print(f"tensor {args.tokens} x {args.channels} bf16, grid 400 x 800; first paint {first:.2f} s")
    for label, ts in times.items():
        print(f"toggle {label!r}: median {statistics.median(ts):.3f} s "
              f"(min {min(ts):.3f}, max {max(ts):.3f}, n={len(ts)}); of which the last "
              f"step, new figure in the page -> drawn frame: median "
              f"{statistics.median(draws[label]):.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()
