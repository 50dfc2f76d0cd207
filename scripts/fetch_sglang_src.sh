#!/usr/bin/env bash
# SGLang's own dump writers (plain Python) for tests/dumps/test_sglang_real_writer.py: SGLang
# itself does not install on a CPU machine, so its wheel (the version locks/sglang.txt pins) is
# downloaded without dependencies and only sglang/srt/debug_utils/ is kept.
set -euo pipefail
py=${1:-.venv/bin/python}
dest=${2:-.cache/sglang-src}
version=$(sed -n 's/^sglang==\([^ ]*\).*/\1/p' locks/sglang.txt)
if [ -f "$dest/sglang/srt/debug_utils/dumper.py" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download -q --no-deps "sglang==$version" -d "$tmp"
rm -rf "$dest"
"$py" - "$tmp" "$dest" <<'PY'
import sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("sglang-*.whl"))
with zipfile.ZipFile(wheel) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("sglang/srt/debug_utils/")])
PY
echo "$version" >"$dest/VERSION"
echo "sglang $version dump writers in $dest"
