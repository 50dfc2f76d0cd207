#!/usr/bin/env bash
# Creates the project venv from the lock (locks/studio.txt) without ever replacing a torch the
# machine already has (NPU/GPU builds are preinstalled system-wide on users' machines).
# STUDIO_LOCK=none resolves the newest allowed versions instead (what `make lock` does).
set -euo pipefail
venv=${1:-.venv}
torch_cpu=${2:-torch==2.13.0}
python=${PYTHON:-python3}
lock=${STUDIO_LOCK:-locks/studio.txt}

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv --system-site-packages "$venv"
fi
py="$venv/bin/python"
pip_pin=$(sed -n 's/^pip==\([^ ]*\).*/\1/p' locks/tools.txt 2>/dev/null || true)
"$py" -m pip install -q --upgrade "pip${pip_pin:+==$pip_pin}"

if ! "$py" -c "import torch" 2>/dev/null; then
  echo "no importable torch: installing $torch_cpu (CPU build)"
  "$py" -m pip install -q "$torch_cpu"
fi
torch_version=$("$py" -c "import torch; print(torch.__version__)")
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
if [ "$lock" != none ]; then
  # The machine's torch is kept; where it is not the locked build, torch-bound pins are dropped.
  "$py" scripts/lock.py constraints "$lock" --torch "$torch_version" >"$constraints"
else
  echo "torch==$torch_version" >"$constraints"
fi
PIP_CONSTRAINT="$constraints" "$py" -m pip install -q -e ".[dev,triton]"
echo "installed into $venv (torch $torch_version, lock: $lock)"
bash scripts/install_dump_tools.sh "$py" "$constraints"
