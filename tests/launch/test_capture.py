"""Capture: truncation with the model's tokenizer, the request the server receives, dump roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio_backend.errors import InputError, StudioError
from studio_backend.launch.capture import capture, list_captures, read_text, truncate
from studio_backend.launch.spec import DumpSettings, LaunchSpec
from studio_backend.launch.supervisor import Supervisor
from tests.launch.conftest import free_port, standin


def test_truncate_to_n_tokens(tokenized_model: Path) -> None:
    words = [f"w{i}" for i in range(150)]
    text, n = truncate(tokenized_model, "  ".join(words) + "\n", 10)
    assert n == 10
    assert text == " ".join(words[:10])
    text, n = truncate(tokenized_model, "w1 w2", 10)  # shorter than N: unchanged
    assert (text, n) == ("w1 w2", 2)


def test_truncate_needs_tokenizer(model_dir: Path) -> None:
    with pytest.raises(InputError, match="tokenizer"):
        truncate(model_dir, "hello", 5)


def test_read_text_sources(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("w1 w2", encoding="utf-8")
    assert read_text(str(f)) == (str(f), "w1 w2")
    assert read_text(text="w3") == ("pasted text", "w3")
    with pytest.raises(InputError, match="exactly one"):
        read_text(str(f), "x")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputError, match="not UTF-8"):
        read_text(str(tmp_path / "bin"))


def test_capture_against_standin(workspace, tokenized_model: Path, tmp_path: Path) -> None:
    sup = Supervisor(workspace, poll_s=0.1)
    port = free_port()
    record = tmp_path / "requests.jsonl"
    dump = tmp_path / "dump"
    spec = LaunchSpec("reference", str(tokenized_model), port=port,
                      dump=DumpSettings(tool="msit", dump_path=str(dump)))  # fmt: skip
    launch = sup.start(spec, command=standin(port, "--record", str(record), "--dump-dir", str(dump),
                                             "--model-name", "tiny-moe"))  # fmt: skip
    with pytest.raises(StudioError, match="not ready"):
        capture(workspace, launch, text="w1", n_tokens=1)
    launch = sup.wait_status(launch.launch_id, ("ready",), 30)
    src = tmp_path / "doc.txt"
    src.write_text(" ".join(f"w{i}" for i in range(100)), encoding="utf-8")
    result = capture(workspace, launch, text_file=str(src), n_tokens=12, max_tokens=3)
    sent = [json.loads(line) for line in record.read_text().splitlines()]
    assert sent == [
        {
            "model": "tiny-moe",
            "prompt": " ".join(f"w{i}" for i in range(12)),
            "max_tokens": 3,
            "temperature": 0,
        }
    ]
    assert result.prompt.n_tokens == 12
    assert result.completion == " done done done"
    root = dump / f"msit_dump_{launch.pid}"
    assert result.dump_roots == [str(root)]
    rows = list_captures(workspace, launch.launch_id)
    assert [(r["capture_id"], r["status"], r["prompt_tokens"], r["source"]) for r in rows] == [
        (result.capture_id, "done", 12, str(src))
    ]
    assert json.loads(rows[0]["dump_root"]) == [str(root)]
    # A second capture into the same process folder still finds it (updated).
    again = capture(workspace, launch, text="w5 w6", n_tokens=12)
    assert again.prompt.n_tokens == 2
    assert again.dump_roots == [str(root)]
    assert sorted(p.name for p in (root / "torch_tensors" / "cpu_0").iterdir()) == ["0", "1"]
    sup.stop(launch.launch_id)
    sup.close()
