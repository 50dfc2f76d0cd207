"""A transformers Qwen3MoeForCausalLM forward under the real msprobe hooks, in a fresh process.

``python -m tests.compare.hf_msprobe MODEL_DIR OUT IDS [tensor|statistics]``: loads the
checkpoint with transformers (float32), dumps one forward over ``IDS`` (comma-separated token
ids, one batch row) with msprobe's ``PrecisionDebugger`` as its docs say, to ``OUT/dump``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(model_dir: str, out: str, ids: str, task: str = "tensor") -> None:
    from msprobe.pytorch import PrecisionDebugger
    from transformers import Qwen3MoeForCausalLM

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    model = Qwen3MoeForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cfg = {"task": task, "dump_path": str(root / "dump"), "rank": [], "step": [0], "level": "L0",
           task: {"scope": [], "list": [], "data_mode": ["all"]}}  # fmt: skip
    (root / "msprobe_config.json").write_text(json.dumps(cfg))
    debugger = PrecisionDebugger(config_path=str(root / "msprobe_config.json"))
    debugger.start(model=model)
    with torch.no_grad():
        model(torch.tensor([[int(i) for i in ids.split(",")]]))
    debugger.stop()
    debugger.step()


if __name__ == "__main__":
    main(*sys.argv[1:])
