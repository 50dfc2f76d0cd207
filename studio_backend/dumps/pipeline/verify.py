"""Verify stage: summed partials checked against their parent block's output; failures removed."""

from __future__ import annotations

import torch

from studio_backend.dumps import fused, run_checks
from studio_backend.dumps.stitch.rules import NO_PARENT_CHECK
from studio_backend.dumps.stitch.stitcher import max_diff, tolerance


def check_partial(
    mine: torch.Tensor, parent: torch.Tensor, n_ranks: int
) -> tuple[str, float | None, str]:
    """(verdict, max diff, detail): the sum of ``n_ranks`` partial outputs against the parent
    block's output, within the float tolerance of that many additions. Pure."""
    if mine.shape != parent.shape:
        return (
            "failed",
            None,
            f"summed shape {list(mine.shape)} != parent output {list(parent.shape)}",
        )
    fast = fused.diff_and_scale_bf16(mine, parent)  # one numba pass each; finite bf16 only
    if fast is not None:
        diff, scale = fast
    else:
        diff = max_diff(mine, parent)
        lo, hi = torch.aminmax(parent) if parent.numel() else (0.0, 0.0)
        scale = max(abs(float(lo)), abs(float(hi)))
    ok = diff <= tolerance(parent.dtype, scale, n_ranks)
    detail = (f"sum of {n_ranks} partial outputs equals the parent block's output" if ok
              else "sum of partial outputs differs from the parent block's output")  # fmt: skip
    return ("verified" if ok else "failed"), diff, detail


class VerifyStage:
    """Partial-sum checks over the run (mixed into ``Ingestor``)."""

    def verify_partial_sums(self, final: bool = False) -> int:
        """Check each summed partial (FusedMoE) against its parent block's stitched output."""
        cur = self.ws.cursor()
        pending = cur.execute(
            """
            SELECT r.stitch_key, r.step, r.module, r.tensor_id, p.tensor_id, r.ranks,
                   r.module_class
            FROM dump_stitch_report r
            LEFT JOIN dump_stitch_report p ON p.run_id = r.run_id AND p.step = r.step
                 AND p.module = regexp_replace(r.module, '\\.[^.]+$', '') AND p.io = 'output'
                 AND p.idx = 0 AND p.tensor_id IS NOT NULL
                 AND NOT list_contains(?, coalesce(r.module_class, ''))
            WHERE r.run_id = ? AND r.rule = 'partial_sum' AND r.verdict = 'assumed'
            """,
            [sorted(NO_PARENT_CHECK), self.run_id],
        ).fetchall()
        updates: list[tuple[str | None, float | None, str, str]] = []
        for key, _step, _module, tid, parent_tid, ranks, cls in pending:
            if parent_tid is None:
                if final:
                    why = ("the parent's output is not this sum" if cls in NO_PARENT_CHECK
                           else "the parent block's output was not dumped")  # fmt: skip
                    updates.append((None, None, f"partial sums added over ranks; {why}, so the "
                                    "sum is unverified", key))  # fmt: skip
                continue
            verdict, diff, detail = self._check_partial(tid, parent_tid, len(ranks))
            updates.append((verdict, diff, detail, key))
        if updates:  # one transaction: each commit is a WAL sync
            with self.ws.transaction() as w:
                w.executemany(
                    "UPDATE dump_stitch_report SET verdict = coalesce(?, verdict), "
                    "max_abs_diff = coalesce(?, max_abs_diff), detail = ? WHERE stitch_key = ?",
                    updates,
                )
        failed = [key for verdict, _d, _t, key in updates if verdict == "failed"]
        if failed:
            self._drop_stitched(failed)
        for verdict, _diff, detail, key in updates:
            if verdict == "failed":
                self._error(key, "stitch_failed", detail)
        return sum(1 for u in updates if u[0] is not None)

    def _check_partial(self, tid: int, parent_tid: int, n_ranks: int):  # noqa: ANN202
        """(verdict, max diff, detail) of one summed partial against its parent's output."""
        from studio_backend.dumps.query import load_tensor

        return check_partial(load_tensor(self.ws, tid), load_tensor(self.ws, parent_tid), n_ranks)

    def _drop_stitched(self, keys: list[str]) -> None:
        run_checks.drop_stitched(self.ws, self.run_id, keys)
