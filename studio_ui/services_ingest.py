"""Background ingest inside the studio server (the workspace's single DuckDB writer)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from studio_backend.dumps.ingest import Progress, ingest_dump
from studio_backend.dumps.watch import DumpWatcher
from studio_backend.errors import StudioError
from studio_backend.paths import existing_dir
from studio_ui.state import workspace


@dataclass
class Job:
    """One ingest (``once``) or watch of a dump folder, with its live progress."""

    path: str
    mode: str  # 'once' | 'watch' | 'ray'
    started: float = field(default_factory=time.time)
    progress: Progress | None = None
    run_id: str | None = None
    error: str | None = None
    done: bool = False
    watcher: DumpWatcher | None = None

    def row(self) -> dict[str, object]:
        p = self.progress.as_dict() if self.progress else {}
        if self.watcher is not None:
            self.run_id = self.watcher.run_id or self.run_id
            self.error = self.watcher.error or self.error
        # file closed -> viewable latency means something only while watching a live writer
        live = self.mode == "watch" and self.progress is not None and self.progress.latencies_s
        lat = sorted(self.progress.latencies_s) if live and self.progress else []
        return {
            "state": "failed" if self.error and self.done else ("done" if self.done else "running"),
            "mode": self.mode, "files": p.get("files_done", 0), "MB/s": p.get("mb_per_s", 0.0),
            "queue": p.get("queue_depth", 0), "stitched": p.get("stitched", 0),
            "statistics": p.get("stats_done", 0), "errors": p.get("errors", 0),
            "p95 latency s": round(lat[int(0.95 * (len(lat) - 1))], 3) if lat else None,
            "run": self.run_id or "", "folder": self.path, "error": self.error or "",
        }  # fmt: skip


class IngestService:
    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self._lock = threading.Lock()

    def ingest(
        self, path: str, name: str | None = None, model_config: dict | None = None,
        ray: str | None = None,
    ) -> Job:  # fmt: skip
        """Ingest in a background thread; with ``ray`` (a head's host:port) over that cluster,
        where ``path`` is the dump folder on its nodes (not necessarily on this machine)."""
        folder = path if ray else str(existing_dir(path, "dump folder"))
        job = Job(folder, "once" if not ray else "ray")

        def work() -> None:
            try:
                if ray:
                    from studio_backend.dumps.cluster.ingest import ingest_dump_ray

                    job.run_id = ingest_dump_ray(
                        workspace(), ray, folder, name, model_config=model_config,
                        on_progress=lambda p: setattr(job, "progress", p),
                    )  # fmt: skip
                    return
                job.run_id = ingest_dump(
                    workspace(), folder, name, model_config=model_config,
                    on_progress=lambda p: setattr(job, "progress", p),
                )  # fmt: skip
            except StudioError as exc:
                job.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - shown on the page
                job.error = f"{type(exc).__name__}: {exc}"
            finally:
                job.done = True

        with self._lock:
            self.jobs.append(job)
        threading.Thread(target=work, name=f"ingest:{Path(folder).name}", daemon=True).start()
        return job

    def watch(self, path: str, name: str | None = None, model_config: dict | None = None) -> Job:
        folder = str(existing_dir(path, "dump folder"))
        for j in self.jobs:
            if j.mode == "watch" and j.path == folder and not j.done:
                raise StudioError(f"{folder} is already being watched")
        job = Job(folder, "watch")
        job.watcher = DumpWatcher(
            workspace(), folder, name, model_config=model_config,
            on_progress=lambda p: setattr(job, "progress", p),
        ).start()  # fmt: skip
        with self._lock:
            self.jobs.append(job)
        return job

    def stop(self, job: Job) -> None:
        if job.watcher is not None and not job.done:
            job.watcher.stop(finish=True)
            job.progress = job.watcher.progress
            job.run_id = job.watcher.run_id
            job.done = True

    def active(self) -> list[Job]:
        return [j for j in self.jobs if not j.done]


@st.cache_resource(show_spinner=False)
def ingest_service() -> IngestService:
    return IngestService()
