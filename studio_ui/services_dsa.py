"""Background ingest of DSA traces inside the studio server (the workspace's single writer)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from studio_backend.dsa.ingest import Ingestor, attach_summary, detect_kind
from studio_backend.workspace import Workspace


@dataclass
class Job:
    path: Path
    follow_s: float
    rows: int = 0
    state: str = "starting"
    error: str = ""
    started: float = field(default_factory=time.time)


class DsaIngestService:
    """Ingests files in threads; a followed file is polled until it stops growing."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def start(self, path: Path, follow_s: float = 0.0) -> Job:
        key = str(path.resolve())
        with self._lock:
            job = self.jobs.get(key)
            if job and job.state in ("starting", "ingesting", "following"):
                return job
            job = Job(path.resolve(), follow_s)
            self.jobs[key] = job
        threading.Thread(target=self._run, args=(job,), daemon=True).start()
        return job

    def _run(self, job: Job) -> None:
        try:
            kind = detect_kind(job.path)
            if kind == "summary":
                attach_summary(self.ws, job.path)
                job.state = "done"
                return
            ing = Ingestor(self.ws, job.path, kind=kind)
            job.state = "ingesting"
            job.rows += ing.poll()
            idle = time.monotonic()
            while job.follow_s > 0 and time.monotonic() - idle < job.follow_s:
                job.state = "following"
                time.sleep(1.0)
                n = ing.poll()
                if n:
                    job.rows += n
                    idle = time.monotonic()
            job.rows += (
                ing.finish()
            )  # a last line without newline; a truncated gzip becomes a bad line
            summary = job.path.parent / "summary.json"
            if kind == "steps" and summary.is_file():
                attach_summary(self.ws, summary, ing.trace_id)
            res = ing.result()
            self.ws.log(
                "dsa", f"ingested {job.path.name}: {res.rows} rows, {res.bad_lines} bad lines"
            )
            job.state = "done"
        except Exception as exc:  # noqa: BLE001 - shown on the page
            job.state, job.error = "failed", str(exc)


@st.cache_resource(show_spinner=False)
def _service(root: str, _ws: Workspace) -> DsaIngestService:
    return DsaIngestService(_ws)


def ingest_service(ws: Workspace) -> DsaIngestService:
    return _service(str(ws.root), ws)
