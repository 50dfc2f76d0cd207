"""End-to-end: the Launch page in headless Chromium drives real server processes."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from studio_backend.dumps.synthetic import SynthConfig
from studio_backend.launch import procs
from studio_backend.launch.spec import DumpSettings, LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from studio_backend.workspace import open_workspace
from tests.e2e.conftest import wait_for_app
from tests.launch.conftest import _no_leftover_servers, free_port, kill_groups, standin  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _tokenized(model_dir: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    vocab = {f"w{i}": i for i in range(200)} | {"[UNK]": 200}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(model_dir)
    return model_dir


def _open_launch_page(page, url: str) -> None:
    # Through the navigation (a first request to /launch would bypass st.navigation).
    page.goto(url)
    wait_for_app(page)
    page.get_by_test_id("stSidebarNav").get_by_text("Launch", exact=True).click()
    wait_for_app(page)
    page.get_by_role("heading", name="Launch").first.wait_for()


def _groups_running(marker: str, program: str = "serve-reference") -> list[int]:
    """Process groups of ``program`` processes whose command line names ``marker``."""
    groups = set()
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if program in cmd and marker in cmd and entry.name.isdigit():
            pgid = procs.pgid_of(int(entry.name))
            if pgid:
                groups.add(pgid)
    return sorted(groups)


def _wait_text(page, text: str, timeout_s: float = 60) -> None:
    try:
        page.wait_for_function(
            "t => document.body.innerText.includes(t)", arg=text, timeout=timeout_s * 1000
        )
    except Exception:
        Path("/tmp/launch-e2e-body.txt").write_text(page.inner_text("body"))
        raise


def test_reattach_capture_ingest_stop_from_page(studio_factory, page, tmp_path: Path) -> None:
    """A server left running by an earlier studio is re-attached, captured from and stopped."""
    ws_dir = tmp_path / "e2e-workspace"
    model = _tokenized(tmp_path / "tiny-model")
    # The stand-in writes the dumps package's seeded synthetic tp=2 msit dump of this config.
    (model / "config.json").write_text(json.dumps(SynthConfig().hf_config()))
    record = tmp_path / "requests.jsonl"
    dump = tmp_path / "dump"
    ws = open_workspace(ws_dir)
    sup = Supervisor(ws, poll_s=0.1)
    port = free_port()
    launch = sup.start(
        LaunchSpec(
            "reference", str(model), port=port, dump=DumpSettings(tool="msit", dump_path=str(dump))
        ),
        command=standin(
            port,
            "--record",
            str(record),
            "--dump-dir",
            str(dump),
            "--spawn-worker",
            "--synthetic-msit-tp",
            "2",
        ),  # fmt: skip
    )
    sup.wait_status(launch.launch_id, ("ready",), 30)
    sup.close()
    ws.close()  # the studio that started it is gone; the server keeps running

    server = studio_factory(ws_dir)
    _open_launch_page(page, server.url)
    _wait_text(page, f"http://127.0.0.1:{port}")
    assert "ready" in page.inner_text("body")

    page.get_by_label("Text to send", exact=True).fill(" ".join(f"w{i}" for i in range(50)))
    page.get_by_label("Truncate to N tokens (model's tokenizer)").fill("7")
    page.get_by_label("Truncate to N tokens (model's tokenizer)").press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Capture", exact=True).click()
    _wait_text(page, "7 prompt tokens")
    _wait_text(page, "dump folder:")
    _wait_text(page, "stitched modules", 120)
    _wait_text(page, "Open Activations for run", 120)
    body = page.inner_text("body")
    assert " 0 stitched modules" not in body
    sent = json.loads(record.read_text().splitlines()[-1])
    assert sent["prompt"] == " ".join(f"w{i}" for i in range(7))
    page.get_by_text("Ingested:").first.scroll_into_view_if_needed()
    page.wait_for_timeout(1200)
    page.screenshot(path=str(tmp_path / "launch-captured.png"), full_page=True)

    page.get_by_role("button", name="Stop", exact=True).click()
    deadline = time.monotonic() + 30
    while procs.group_members(launch.pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert procs.group_members(launch.pgid) == []
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')].some(e => e.innerText === 'stopped')",
        timeout=30_000,
    )
    page.screenshot(path=str(tmp_path / "launch-stopped.png"), full_page=True)


@pytest.mark.skipif(
    not (
        _have("studio_backend.engines.reference")
        and _have("studio_backend.models.create")
        and _have("studio_backend.dumps.ingest")
    ),
    reason="needs the reference engine (studio_backend.engines.reference, studio serve-reference), "
    "studio_backend.models.create and studio_backend.dumps.ingest on main",
)
def test_launch_reference_tp2_capture_ingest_stop(studio_factory, page, tmp_path: Path) -> None:
    """Launch the reference engine with tp=2 from the page, capture, see stitched modules, stop."""
    try:
        _reference_flow(studio_factory, page, tmp_path)
    finally:  # the studio started it in its own group: kill it here if the test failed midway
        kill_groups(_groups_running(str(tmp_path)))


def _reference_flow(studio_factory, page, tmp_path: Path) -> None:
    from studio_backend.models.create import create_model

    model = create_model(tmp_path / "tiny", preset="tiny", layers=2, seed=0)
    ws_dir = tmp_path / "e2e-workspace"
    open_workspace(ws_dir).close()
    server = studio_factory(ws_dir)
    port = free_port()
    _open_launch_page(page, server.url)
    page.get_by_label("Model directory").fill(str(model))
    page.get_by_label("Model directory").press("Enter")
    page.get_by_label("TP size").fill("2")
    page.get_by_label("TP size").press("Enter")
    page.get_by_label("Port").fill(str(port))
    page.get_by_label("Port").press("Enter")
    page.wait_for_timeout(500)
    page.get_by_test_id("stSelectbox").filter(has_text="Dump tool").click()
    page.get_by_role("option", name="msit", exact=True).click()
    wait_for_app(page)
    _wait_text(page, "serve-reference")
    page.get_by_role("button", name="Launch", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')].some(e => e.innerText === 'ready')",
        timeout=240_000,
    )
    page.get_by_label("Text to send", exact=True).fill(
        "The quick brown fox jumps over the lazy dog. " * 20
    )
    truncate = page.get_by_label("Truncate to N tokens (model's tokenizer)")
    # A value typed while the page script reruns can be replaced by the rerun's render (seen on
    # a loaded box): commit it, let the rerun finish, and check it stuck before capturing.
    for _ in range(5):
        page.wait_for_timeout(300)
        wait_for_app(page)
        if truncate.input_value() == "16":
            break
        truncate.fill("16")
        truncate.press("Enter")
    assert truncate.input_value() == "16"
    page.get_by_role("button", name="Capture", exact=True).click()
    _wait_text(page, "16 prompt tokens", 240)
    _wait_text(page, "stitched modules", 240)
    _wait_text(page, "Open Dumps for run", 240) if (
        Path(__file__).parents[2] / "app_pages/dumps.py"
    ).is_file() else None
    page.get_by_text("Ingested:").first.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    page.screenshot(path=str(tmp_path / "launch-reference.png"), full_page=True)
    body = page.inner_text("body")
    assert "0 stitched modules" not in body

    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=\"stMetricValue\"]')].some(e => e.innerText === 'stopped')",
        timeout=60_000,
    )
    pid = int(page.get_by_test_id("stMetricValue").nth(2).inner_text())
    assert procs.group_members(pid) == []
