"""Browser fixtures: a studio server on a free port and headless Chromium through Playwright."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() == 0:
        pytest.fail("chromium is missing although we are root: run `make browser`")
    pytest.skip("chromium is not installed and cannot be installed without root")


class StudioServer:
    def __init__(self, workspace: Path, log: Path) -> None:
        self.workspace = workspace
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, STUDIO_WORKSPACE=str(workspace), PYTHONUNBUFFERED="1")
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "streamlit", "run", "run_studio.py",
                "--server.port", str(self.port), "--server.address", "127.0.0.1",
                "--server.headless", "true",
            ],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.log_path = log

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"studio exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"studio not ready after {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


@pytest.fixture
def studio_factory(tmp_path: Path) -> Iterator:
    """Start studio servers on free ports against given workspaces; all stopped at teardown."""
    servers: list[StudioServer] = []

    def start(workspace: Path | None = None) -> StudioServer:
        ws = workspace or (tmp_path / "workspace")
        server = StudioServer(ws, tmp_path / f"studio-{len(servers)}.log")
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def page(tmp_path: Path):
    """A Playwright page in headless Debian Chromium."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            # Playwright gives every launch a fresh temporary profile directory.
            args=CHROMIUM_FLAGS,
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()


def wait_for_app(pg, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the page script."""
    pg.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    pg.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=timeout,
    )


# The Activations surface is a custom component (studio_ui/components/surface): its plot lives in
# an iframe.
SURFACE = "iframe[title='studio_ui.components.surface.studio_surface']"


def surface_frame(page):  # noqa: ANN001, ANN201 - a Playwright page and its FrameLocator
    """The surface component's frame (``.locator(...)`` finds the plot inside it)."""
    return page.frame_locator(SURFACE)
