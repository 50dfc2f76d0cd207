"""Tool statistics: what msit (statistics.csv) and msprobe (dump.json) computed themselves."""

from __future__ import annotations

from studio_backend.dumps import file_checks
from studio_backend.dumps.formats import msit, msprobe
from studio_backend.dumps.pipeline.discover import content_key
from studio_backend.errors import InputError


class ToolStatsStage:
    """Reading the tool's own statistics files into rows (mixed into ``Ingestor``)."""

    def ingest_tool_stats(self) -> int:
        """Statistics written by the tool itself (msit statistics.csv, msprobe dump.json)."""
        root = self.layout.root
        n = 0
        if self.layout.format == "msit":
            files = [
                f for rf in self.layout.folders.values() for f in rf.path.glob("*/*/statistics.csv")
            ]
        elif self.layout.format == "msprobe":
            files = list(root.glob("step*/*/dump.json"))
        else:
            files = []  # SGLang writes no statistics of its own
        for f in sorted(files):
            bad = file_checks.name_problem(f) or file_checks.not_regular(f)
            if bad:
                self._error(file_checks.printable(f), "skipped", bad, once=True)
                continue
            rel = str(f.relative_to(root))
            try:
                key = content_key(f)
                if self._done.get(rel) == key:
                    continue
                rows = (
                    msit.read_statistics_csv(f)
                    if self.layout.format == "msit"
                    else msprobe.read_dump_json_stats(f)
                )
            except (InputError, OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                err = file_checks.side_file_error(f, exc)
                self._error(file_checks.printable(f), "unreadable", err.problem, once=True)
                continue
            rows = [file_checks.clean_tool_row(r) for r in rows]
            if self.layout.format == "msit":  # <rank>/<step>/<module>/statistics.csv
                folder, step_s = f.parents[2].name, f.parents[1].name
            else:  # step<N>/<rank>/dump.json
                folder, step_s = f.parent.name, f.parents[1].name.removeprefix("step")
            with self.ws.transaction() as cur:
                for r in rows:
                    cur.execute(
                        "INSERT INTO dump_tool_stats (run_id, rank, step, module, module_class, io, idx, "
                        "dtype, shape, max, min, mean, l2, source_file, arg_name) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        [self.run_id, self.layout.ranks.get(folder), int(step_s) if step_s.isdigit() else None,
                         r["module"], r["module_class"], r["io"], r["idx"], r["dtype"], r["shape"],
                         r["max"], r["min"], r["mean"], r["l2"], str(f), r.get("arg_name")],
                    )  # fmt: skip
                cur.execute(
                    "INSERT OR REPLACE INTO dump_ingest_files (run_id, relpath, content_key, size, status) "
                    "VALUES (?, ?, ?, ?, 'ingested')",
                    [self.run_id, rel, key, f.stat().st_size],
                )
            self._done[rel] = key
            n += len(rows)
        return n
