"""Benchmark: ``studio render`` as the user types it, timed as a whole process.

Times ``python -m studio_backend.cli --workspace WS render RUN --layer-pattern P --out DIR`` (wall and
user+sys CPU of the process and its workers, from the OS) for this checkout and, interleaved
A B A B, for a baseline checkout (e.g. ``git worktree add --detach /work/wt/uxbase main``), each
with its own ``PYTHONPATH``. Prints the command, the load average before and after, every run,
the medians and the ratio, and one timeline of this checkout (``STUDIO_TIMELINE_T0``: phase marks
of the CLI and of each worker on the same clock).

    python bench/render_cli.py [--workspace WS] [--run RUN] [--base DIR] [--repeat 3]

Without ``--workspace`` a fresh one is made with ``studio demo`` (about 10-30 s, not timed).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def env_for(checkout: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{checkout}:{checkout / 'kernels'}"
    env.update(extra)
    return env


def studio(checkout: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "studio_backend.cli", *args]
    return subprocess.run(cmd, env=env_for(checkout, **extra), cwd=checkout,
                          capture_output=True, text=True, check=False)  # fmt: skip


def demo_run(ws: Path) -> str:
    """The dump run of the workspace's demo (the first dump run listed)."""
    out = studio(HERE, "--workspace", str(ws), "runs")
    for line in out.stdout.splitlines():
        for word in line.split():
            if word.startswith("run-"):
                return word
    raise SystemExit(f"no dump run in {ws}:\n{out.stdout}{out.stderr}")


def timed(checkout: Path, args: list[str], out: Path, **extra: str) -> tuple[float, float, str]:
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = studio(checkout, *args, "--out", str(out), STUDIO_TIMELINE_T0=repr(t0), **extra)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if p.returncode != 0:
        raise SystemExit(f"{checkout}: exit {p.returncode}\n{p.stderr}")
    n = len(list(out.glob("*.png")))
    return wall, cpu, f"{n} PNGs\n{p.stderr}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, default=None)
    ap.add_argument("--run", default=None, help="run id (default: the demo's dump run)")
    ap.add_argument("--pattern", default=r"layers\.0\.")
    ap.add_argument("--base", type=Path, default=None, help="baseline checkout to interleave")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="render_cli_"))
    ws = a.workspace
    if ws is None:
        ws = tmp / "ws"
        p = studio(HERE, "--workspace", str(ws), "demo")
        if p.returncode != 0:
            raise SystemExit(f"studio demo failed:\n{p.stderr[-2000:]}")
    run = a.run or demo_run(ws)
    args = ["--workspace", str(ws), "render", run, "--layer-pattern", a.pattern]
    print("command: python -m studio_backend.cli " + " ".join(args) + " --out DIR")
    print(f"cpus: {os.cpu_count()}   load before: {os.getloadavg()}")
    sides = {"this": HERE} | ({"base": a.base.resolve()} if a.base else {})
    timed(HERE, args, tmp / "warm")  # warm the page cache and Mesa's shader cache, not counted
    walls: dict[str, list[float]] = {k: [] for k in sides}
    for i in range(a.repeat):
        for name, checkout in sides.items():
            wall, cpu, info = timed(checkout, args, tmp / name)
            walls[name].append(wall)
            print(
                f"run {i + 1} {name:4s} wall {wall:6.2f} s  cpu {cpu:6.2f} s  {info.splitlines()[0]}"
            )
    for name, w in walls.items():
        print(f"median {name}: {statistics.median(w):.2f} s wall")
    if a.base:
        ratio = statistics.median(walls["base"]) / statistics.median(walls["this"])
        print(f"speed-up (base / this, medians): {ratio:.2f}x")
    print(f"load after: {os.getloadavg()}")
    _, _, info = timed(HERE, args, tmp / "timeline")
    print("timeline of this checkout (s since the command started, pid, phase):")
    print("\n".join(line for line in info.splitlines() if line.startswith("timeline")))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
