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
