"""Screenshots of every page after Home's one-click demo, and the README's 3D hover view.

Starts the studio as the browser tests do (tests/e2e/conftest.py) on WORKSPACE, clicks Home's
"Run the demo" when the workspace holds no dump run yet, then saves a full-page screenshot of
each page, of the Trace page's "Profile a run" form, of the Activations tabs, and the README
image: the Activations page's 3D surface with its hover label (token, token text, channel,
value) shown.

    python scripts/screenshots.py --workspace /tmp/shots-ws --out /tmp/shots \
        [--readme assets/screenshots/activations_hover.png]
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from studio_ui.navigation import PAGES  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_FLAGS, StudioServer, wait_for_app  # noqa: E402

# The README view: layer 2's residual stream (decoder layer output 1) of the demo's prefill,
# where the demo model's massive activations (|x| ~600) sit on the first and delimiter tokens;
# log scale (sign * log10(1+|x|)) so the ordinary values stay visible beside them.
README_VIEW = {"pattern": r"^model\.layers\.2$", "module": "model.layers.2", "io": "output",
               "step": "0", "idx": "1", "log": "1"}  # fmt: skip
VALUE = re.compile(r"token \d+.*channel \d+.*?value (-?[\d.]+(?:e[+-]?\d+)?)", re.S)


def _has_runs(ws: Path) -> bool:
    from studio_backend.workspace import open_workspace

    if not (ws / "studio.duckdb").exists():
        return False
    w = open_workspace(ws)
    try:
        return bool(w.cursor().execute("SELECT count(*) FROM dump_runs").fetchone()[0])
    finally:
        w.close()


def _settle(pg, ms: int = 2500) -> None:
    wait_for_app(pg, timeout=600_000)
    pg.wait_for_timeout(ms)  # WebGL and iframes finish drawing


def _shot(pg, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so the viewport is made as
    tall as that block's content for the screenshot (then set back)."""
    size = pg.viewport_size
    tall = (
        pg.evaluate(
            "() => Math.max(document.querySelector('[data-testid=stMainBlockContainer]').scrollHeight,"
            " (document.querySelector('[data-testid=stSidebarContent]') || {}).scrollHeight || 0)"
        )
        + 120
    )
    pg.set_viewport_size({"width": size["width"], "height": min(max(tall, size["height"]), 9000)})
    pg.wait_for_timeout(1500)
    pg.screenshot(path=str(path))
    pg.set_viewport_size(size)


def _hover(pg, plot) -> str | None:
    """Sweep the mouse over the WebGL surface, then go back to where plotly.js's hover label
    showed the largest |value| (an outlier makes the better picture) and leave it shown."""
    box = plot.bounding_box()
    best: tuple[float, float, float, str] | None = None
    for fy in (0.45, 0.5, 0.55, 0.6, 0.65, 0.7):
        for fx in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65):
            x, y = box["x"] + box["width"] * fx, box["y"] + box["height"] * fy
            pg.mouse.move(x, y, steps=4)
            pg.wait_for_timeout(250)
            for t in plot.locator(".hovertext").all():
                m = VALUE.search(t.text_content() or "")
                if m and (best is None or abs(float(m[1])) > best[0]):
                    best = (abs(float(m[1])), x, y, t.text_content() or "")
    if best is None:
        return None
    pg.mouse.move(best[1] + 3, best[2] + 3, steps=2)
    pg.mouse.move(best[1], best[2], steps=2)
    pg.wait_for_timeout(800)
    return best[3]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder for the page screenshots")
    ap.add_argument("--readme", type=Path, help="where to save the README's hover screenshot")
    ap.add_argument("--readme-only", action="store_true", help="only the README screenshot")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    server = StudioServer(args.workspace, args.out / "studio.log")
    try:
        server.wait_ready()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
            pg = browser.new_page(viewport={"width": 1440, "height": 1000})
            pg.set_default_timeout(120_000)
            if not _has_runs(args.workspace):
                pg.goto(server.url)
                _settle(pg, 500)
                pg.get_by_role("button", name="Run the demo").click()
                pg.get_by_text("prompt tokens,").wait_for(timeout=900_000)
                print("demo done", flush=True)
            for spec in () if args.readme_only else PAGES:
                pg.goto(f"{server.url}/{'' if spec.url == 'home' else spec.url}")
                _settle(pg)
                _shot(pg, args.out / f"{spec.url}.png")
                print("page", spec.url, flush=True)
            if not args.readme_only:  # Trace: the "Profile a run" form
                pg.goto(f"{server.url}/trace")
                _settle(pg, 500)
                pg.get_by_text("Add a trace or a profile").click()
                pg.wait_for_timeout(1000)
                form = pg.locator("[data-testid='stForm']").filter(has_text="Profile a run")
                form.scroll_into_view_if_needed()
                form.screenshot(path=str(args.out / "trace_profile_form.png"))
            # Activations tabs: Statistics with Across layers, Compare
            # No tokenizer in the link: the page pre-fills the demo model's (its launch record),
            # so hover and tables show each token's text as a user sees them.
            q = urllib.parse.urlencode(README_VIEW)
            tabs = (
                () if args.readme_only else ("Statistics", "Compare", "Outlier finder", "Kronecker")
            )
            for tab in tabs:
                pg.goto(f"{server.url}/activations?{q}&tab={urllib.parse.quote(tab)}")
                _settle(pg)
                if tab == "Statistics":
                    pg.get_by_text("Compute statistics of every").click()
                    _settle(pg)
                if tab == "Compare":
                    # B = the previous layer's residual: a real comparison, not A against itself
                    box = pg.locator("[data-testid='stSelectbox']").filter(has_text="Module B")
                    box.locator("input").fill("model.layers.1")
                    pg.keyboard.press("Enter")
                    _settle(pg, 5000)
                name = tab.lower().replace(" ", "_")
                _shot(pg, args.out / f"activations_{name}.png")
                print("tab", tab, flush=True)
            # README: the 3D surface with its hover label
            pg.goto(f"{server.url}/activations?{q}")
            _settle(pg)
            # The surface is a custom component: its plotly.js plot lives in an iframe.
            frame = pg.frame_locator("iframe[title='studio_ui.components.surface.studio_surface']")
            plot = frame.locator(".js-plotly-plot").first
            plot.locator(".gl-container canvas").first.wait_for(timeout=60_000)
            pg.wait_for_timeout(3000)
            label = _hover(pg, plot)
            print("hover:", label, flush=True)
            if label is None:
                raise SystemExit("no hover label appeared over the surface")
            main_block = pg.locator("[data-testid='stMainBlockContainer']")
            pg.screenshot(path=str(args.out / "activations_hover.png"))
            if args.readme:
                args.readme.parent.mkdir(parents=True, exist_ok=True)
                box = main_block.bounding_box()
                top = plot.bounding_box()
                clip = {"x": box["x"], "y": max(0, top["y"] - 70), "width": box["width"],
                        "height": top["height"] + 70}  # fmt: skip
                pg.screenshot(path=str(args.readme), clip=clip)
                print("readme", args.readme, flush=True)
            browser.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
