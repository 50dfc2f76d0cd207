#!/usr/bin/env bash
# Creates the project venv without ever replacing a torch the machine already has
# (NPU/GPU builds are preinstalled system-wide on users' machines).
set -euo pipefail
venv=${1:-.venv}
torch_cpu=${2:-torch==2.13.0}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --system-site-packages "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip

if ! "$py" -c "import torch" 2>/dev/null; then
  echo "no importable torch: installing $torch_cpu (CPU build)"
  "$py" -m pip install -q "$torch_cpu"
fi
torch_version=$("$py" -c "import torch; print(torch.__version__.split('+')[0])")
constraints=$(mktemp)
cp constraints.txt "$constraints"
echo "torch==$torch_version" >>"$constraints"
# A vendor torch (e.g. 2.5.1+cpu, torch_npu builds) reports a local version; pip sees it installed
# and the constraint keeps every dependency resolution on it.
PIP_CONSTRAINT="$constraints" "$py" -m pip install -q -e ".[dev,triton]"
rm -f "$constraints"
echo "installed into $venv (torch $torch_version)"

# Dump tools (REFERENCE.md 1). Both pin numpy<2 / pull heavy extras through their declared
# dependencies, so they go in with --no-deps plus the few modules they import at run time.
# Skipped when already importable (idempotent, fast on re-runs).
if ! "$py" -c "import msit_llm, msprobe.pytorch" 2>/dev/null; then
  echo "installing msit_llm (msit 8.2.0) and msprobe (mindstudio-probe 26.2)"
  constraints=$(mktemp)
  cp constraints.txt "$constraints"
  echo "torch==$torch_version" >>"$constraints"
  numpy_version=$("$py" -c "import numpy; print(numpy.__version__)")
  echo "numpy==$numpy_version" >>"$constraints"
  tmp=$(mktemp -d)
  # msit_llm lives in the msit sdist under components/llm (not published on its own).
  "$py" -m pip download -q --no-deps --no-binary :all: msit==8.2.0 -d "$tmp"
  "$py" -m zipfile -e "$tmp"/msit-8.2.0.zip "$tmp"
  PIP_CONSTRAINT="$constraints" "$py" -m pip install -q --no-deps "$tmp"/msit-8.2.0.zip \
    "$tmp"/msit-8.2.0/components/llm mindstudio-probe==26.2.0
  PIP_CONSTRAINT="$constraints" "$py" -m pip install -q onnx einops pytz tensorboard pyyaml psutil
  rm -rf "$tmp" "$constraints"
  "$py" -c "import msit_llm, msprobe.pytorch" || echo "warning: msit_llm/msprobe not importable" >&2
fi
