"""Done criterion: stitched tp=2 / tp=4 dumps of the reference engine equal its tp=1 run.

Real msit_llm / msprobe dumps from ``run_offline``; every stitched tensor (Q/K/V and gate/up
parts, experts outputs included) is compared with the tp=1 tensor, in both engine layouts:
current vLLM (experts already reduced: kept, never summed) and the older FusedMoE one (partial
sums added and verified against the block output).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from studio_backend.dumps import query
from studio_backend.dumps.ingest import ingest_dump

offline = pytest.importorskip("studio_backend.engines.reference.offline")
pytest.importorskip("msit_llm")
from studio_backend.engines.reference.dumping import DumpOptions  # noqa: E402
from studio_backend.errors import StudioError  # noqa: E402
from studio_backend.models.create import create_model  # noqa: E402

pytestmark = pytest.mark.slow
PROMPTS = [[11, 57, 203, 9, 100], [3, 480, 4]]
KEY = ["step", "module", "io", "idx", "part", "arg_name", "call_index"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_model(tmp_path_factory.mktemp("dumps-engine") / "tiny", preset="tiny", seed=0)


def _run(tiny: Path, tmp: Path, tp: int, tool: str, layout: str = "vllm") -> Path:
    for attempt in range(2):
        opts = DumpOptions(
            tool=tool, dump_path=tmp / f"{tool}-{layout}-tp{tp}-{attempt}", token_range=[0, 1]
        )
        try:
            return offline.run_offline(
                tiny, tp=tp, prompts=PROMPTS, max_tokens=2, dump=opts, layout=layout
            ).dump_root
        except StudioError as exc:
            # Known engine-side flake under load: a rank process aborts at exit (SIGABRT,
            # "terminate called without an active exception") after msprobe dumps. Retry once.
            if attempt or "-6" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _stitched(ws, root: Path) -> tuple[str, dict[tuple, int]]:
    run = ingest_dump(ws, root, with_stats=False)
    df = query.find_tensors(ws, run)
    keys = {}
    for row in df.itertuples(index=False):
        k = tuple(
            None if (isinstance(v, float) and v != v) else v for v in (getattr(row, c) for c in KEY)
        )
        keys[k] = int(row.tensor_id)
    return run, keys


@pytest.mark.parametrize(
    ("tool", "layout"), [("msit", "vllm"), ("msprobe", "vllm"), ("msit", "fused_moe")]
)
def test_tp2_tp4_equal_tp1(tool: str, layout: str, tiny: Path, tmp_path: Path, workspace) -> None:
    if tool == "msprobe":
        pytest.importorskip("msprobe")
    _, ref = _stitched(workspace, _run(tiny, tmp_path, 1, tool, layout))
    for tp in (2, 4):
        run, got = _stitched(workspace, _run(tiny, tmp_path, tp, tool, layout))
        bad = (
            workspace.cursor()
            .execute(
                "SELECT module, io, idx, verdict, detail FROM dump_stitch_report WHERE run_id = ? "
                "AND verdict IN ('failed', 'unknown')",
                [run],
            )
            .fetchall()
        )
        assert bad == []
        assert set(got) == set(ref), set(got) ^ set(ref)
        worst = 0.0
        for k, tid in got.items():
            a, b = query.load_tensor(workspace, tid), query.load_tensor(workspace, ref[k])
            assert a.shape == b.shape and a.dtype == b.dtype, k
            if a.dtype.is_floating_point:
                d = float((a - b).abs().max()) if a.numel() else 0.0
                assert d < 1e-5, (tp, k, d)
                worst = max(worst, d)
            else:
                assert torch.equal(a, b), k
        parts = {k[4] for k in got if k[4] is not None}
        assert parts == {"q", "k", "v", "gate", "up"}
        experts = [k for k in got if k[1].endswith("mlp.experts") and k[2] == "output"]
        assert experts
        rule = "partial_sum" if layout == "fused_moe" else "replicated"
        verified = (
            workspace.cursor()
            .execute(
                "SELECT count(*) FROM dump_stitch_report WHERE run_id = ? AND rule = ? "
                "AND verdict = 'verified' AND regexp_matches(module, 'mlp\\.experts$') "
                "AND io = 'output'",
                [run, rule],
            )
            .fetchone()[0]
        )
        assert verified == len(experts)
