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
        "(`make vllm-venv` does it)",
    ),
    (
        re.compile(r"less than desired CPU memory utilization|VLLM_CPU_KVCACHE_SPACE"),
        "vLLM on CPU needs VLLM_CPU_KVCACHE_SPACE (GiB of KV cache), e.g. 1",
    ),
    (
        re.compile(r"number of CPU id list .* doesn't match|auto CPU binding|NUMA node"),
        "VLLM_CPU_OMP_THREADS_BIND needs one CPU list per rank, e.g. `0|1` for TP=2 "
        "(`0|1|0|1` for TP=4 on two CPUs)",
    ),
    (
        re.compile(r"No module named '?(vllm|msit_llm|msprobe)'?"),
        "the engine's interpreter lacks this package: pick the vLLM venv's python "
        "(--python, or STUDIO_VLLM_PYTHON; default <checkout>/.venv-vllm/bin/python)",
    ),
    (
        re.compile(r"[Hh]ead ?(size|_dim)\b.*(not supported|unsupported|[Ss]upported head)"),
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
# Lines worth showing: errors, exceptions, the plugin's own lines.
_IMPORTANT = re.compile(
    r"\b(ERROR|CRITICAL|FATAL)\b|Traceback \(most recent call last\)|^\S*(Error|Exception)\b|"
    r"\b\w+(Error|Exception): |\[studio-dump\]"
)
MAX_LINES = 12


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
    important: list[str] = []
    for line in log_lines:
        text = line.rstrip()
        if _IMPORTANT.search(text) and text not in important:
            important.append(text)
    return Diagnosis(hints=hints, lines=important[-MAX_LINES:])
