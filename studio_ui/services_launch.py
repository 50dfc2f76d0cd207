"""The launch service: one supervisor per studio process plus background capture + ingest jobs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import streamlit as st

from studio_backend.errors import StudioError
from studio_backend.launch import ingest
from studio_backend.launch.capture import capture
from studio_backend.launch.supervisor import Supervisor
from studio_backend.workspace import Workspace
from studio_ui.state import workspace


@dataclass
class CaptureJob:
    """A capture running in the background, then the ingest of its dump."""

    launch_id: str
    phase: str = "sending"  # sending | ingesting | done | failed
    capture_id: str | None = None
    n_tokens: int | None = None
    completion: str | None = None
    dump_roots: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    error: str | None = None
    progress: dict[str, float | int] = field(default_factory=dict)  # live ingest counters
    started: float = field(default_factory=time.time)


class LaunchService:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.supervisor = Supervisor(ws)  # re-attaches to servers still running
        self.jobs: list[CaptureJob] = []
        self._lock = threading.Lock()

    def start_capture(
        self,
        launch_id: str,
        *,
        text_file: str | None,
        text: str | None,
        n_tokens: int,
        max_tokens: int,
    ) -> CaptureJob:
        launch = self.supervisor.get(launch_id)
        if launch.status != "ready":
            raise StudioError(f"launch {launch_id} is {launch.status}, not ready")
        job = CaptureJob(launch_id)
        with self._lock:
            self.jobs.insert(0, job)
        threading.Thread(
            target=self._run,
            args=(job, text_file, text, n_tokens, max_tokens),
            daemon=True,
            name="capture",
        ).start()
        return job

    def _run(
        self,
        job: CaptureJob,
        text_file: str | None,
        text: str | None,
        n_tokens: int,
        max_tokens: int,
    ) -> None:
        try:
            launch = self.supervisor.get(job.launch_id)
            result = capture(
                self.ws,
                launch,
                text_file=text_file,
                text=text,
                n_tokens=n_tokens,
                max_tokens=max_tokens,
            )
            job.capture_id, job.n_tokens = result.capture_id, result.prompt.n_tokens
            job.completion, job.dump_roots = result.completion, result.dump_roots
            if result.dump_roots and ingest.available():
                job.phase = "ingesting"
                job.run_ids = ingest.ingest_capture(
                    self.ws,
                    result.capture_id,
                    on_progress=lambda p: job.progress.update(p.as_dict()),
                )
            job.phase = "done"
        except Exception as exc:  # noqa: BLE001 - shown on the page
            job.error = (
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, StudioError) else str(exc)
            )
            job.phase = "failed"

    def jobs_for(self, launch_id: str) -> list[CaptureJob]:
        with self._lock:
            return [j for j in self.jobs if j.launch_id == launch_id]


@st.cache_resource(show_spinner=False)
def _service(root: str) -> LaunchService:
    return LaunchService(workspace())


def launch_service() -> LaunchService:
    """The studio process's launch service (created once, with the workspace it owns)."""
    return _service(str(workspace().root))
