#!/usr/bin/env bash
# Installs msit_llm (from the msit 8.2.0 sdist) and msprobe (mindstudio-probe 26.2.0) into the
# venv of python $1 with constraints file $2 (REFERENCE.md 1). Both pin numpy<2 / pull heavy
# extras through their declared dependencies, so they go in with --no-deps plus the few modules
# they import at run time. Skipped when already importable (idempotent, fast on re-runs).
set -euo pipefail
py=$1
constraints=$2
if "$py" -c "import msit_llm, msprobe.pytorch" 2>/dev/null; then exit 0; fi
echo "installing msit_llm (msit 8.2.0) and msprobe (mindstudio-probe 26.2.0) into $(dirname "$py")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# msit_llm lives in the msit sdist under components/llm (not published on its own).
"$py" -m pip download -q --no-deps --no-binary :all: msit==8.2.0 -d "$tmp"
"$py" -m zipfile -e "$tmp"/msit-8.2.0.zip "$tmp"
PIP_CONSTRAINT="$constraints" "$py" -m pip install -q --no-deps --no-warn-conflicts "$tmp"/msit-8.2.0.zip \
  "$tmp"/msit-8.2.0/components/llm mindstudio-probe==26.2.0
PIP_CONSTRAINT="$constraints" "$py" -m pip install -q --no-warn-conflicts onnx einops pytz tensorboard pyyaml psutil pandas matplotlib
"$py" -c "import msit_llm, msprobe.pytorch"
