"""Why a server did not start: the log lines that matter and what to do about known causes.

The hints are a table (pattern -> advice), each from a failure seen with real engines on our
machines (docs/LAUNCH.md, "When a start fails").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (pattern in a log line, what the user should do)
HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"No package metadata was found for vllm"),
        "this vLLM is the vllm-cpu distribution, whose `vllm serve` looks for a package named "
        "vllm: start it as `python -m vllm.entrypoints.openai.api_server` (engine `vllm` does)",
    ),
    (
        re.compile(r"torchvision::nms does not exist|libnvrtc|libcudart"),
        "CUDA builds of torchvision/torchaudio/torchcodec break every vLLM import on CPU: "
        "`pip uninstall -y torchvision torchaudio torchcodec` in the engine's venv "
        "(`make vllm` does it)",
    ),
    (
        re.compile(r"less than desired CPU memory utilization|VLLM_CPU_KVCACHE_SPACE"),
        "vLLM on CPU needs VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), e.g. 1",
    ),
    (
        re.compile(r"number of CPU id list .* doesn.t match|doesn.t support auto CPU binding"),
        "VLLM_CPU_OMP_THREADS_BIND needs one CPU list per rank, e.g. `0|1` for TP=2 "
        "(`0|1|0|1` for TP=4 on two CPUs)",
    ),
    (
        re.compile(r"No module named '?(vllm|msit_llm|msprobe)'?"),
        "the engine's interpreter lacks this package: pick the vLLM venv's python "
        "(--python, or STUDIO_VLLM_PYTHON; default <checkout>/.venv-vllm/bin/python)",
    ),
    (
        re.compile(r"Unsupported CPU attention configuration: head_dim="),
        "vLLM's CPU attention supports head_dim 32, 64, 80, 96, 112, 128, 160, 192, 224, 256 "
        "and 512 only: use a model such as preset tiny-d32",
    ),
    (
        re.compile(r"Address already in use|address already in use"),
        "the port is taken: stop the other server or pick another port",
    ),
    (
        re.compile(r"out of memory|OutOfMemory|Cannot allocate memory|MemoryError"),
        "not enough memory: a smaller --max-model-len, a smaller TP, or fewer other servers",
    ),
)
# vLLM's prefix: "(VllmWorker-0 pid=8285) ERROR 12-06 13:25:21 [file.py:953] message"
_PREFIX = re.compile(
    r"^(?:\([^)]*pid=\d+\)\s+)?(?:(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+)?"
    r"(?:\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+\[[^\]]*\]\s?)?"
)
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
MAX_LINES = 12


def important(line: str) -> str | None:
    """The message of a line worth showing (an exception, an error that is not a traceback
    frame, a plugin line), or None."""
    if "[studio-dump]" in line:
        return line.strip()
    m = _PREFIX.match(line)
    level = m.group("level") if m else None
    msg = line[m.end() :] if m else line
    if _EXCEPTION.match(msg):
        return msg.strip()
    if level in ("ERROR", "CRITICAL") and msg.strip() and not msg[0].isspace():
        if not msg.startswith("Traceback") and set(msg.strip()) - set("^~ "):
            return msg.strip()
    return None


@dataclass
class Diagnosis:
    hints: list[str]
    lines: list[str]

    def text(self) -> str:
        parts = [f"hint: {h}" for h in self.hints]
        if self.lines:
            parts.append("log lines that matter:")
            parts += [f"  {line}" for line in self.lines]
        return "\n".join(parts)


def diagnose(log_lines: list[str]) -> Diagnosis:
    """Hints for known causes (in table order) and the last important lines, deduplicated."""
    hints: list[str] = []
    for pattern, advice in HINTS:
        if any(pattern.search(line) for line in log_lines) and advice not in hints:
            hints.append(advice)
    lines: list[str] = []
    for line in log_lines:
        text = important(line.rstrip())
        if text and text not in lines:  # each rank repeats the same exception
            lines.append(text)
    return Diagnosis(hints=hints, lines=lines[-MAX_LINES:])
