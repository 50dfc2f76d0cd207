"""Supervision of launched servers: own process group, log file, /health readiness, clean stop.

Every launch is a row in ``launches``. The supervisor that started a server watches it with a
thread; a supervisor created later (a studio restart, the CLI) re-attaches to servers that are
still running (same PID *and* start time) and marks the others as lost.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from studio_backend.errors import InputError, StudioError
from studio_backend.launch import procs
from studio_backend.launch.commands import Command, build
from studio_backend.launch.diagnose import diagnose
from studio_backend.launch.logtail import STOP_REQUESTED, STUDIO_MARK, tail
from studio_backend.launch.spec import LaunchSpec, validate
from studio_backend.workspace import Workspace

ACTIVE = ("starting", "ready", "stopping")


def new_id(letter: str) -> str:
    """A launch ("L") or capture ("C") id: the time it was made and 4 random hex digits."""
    return time.strftime(f"{letter}%Y%m%d-%H%M%S-") + secrets.token_hex(2)


CRASH_LINES = 30
DIAGNOSE_LINES = 400  # a vLLM traceback from a worker is long; its cause comes early
_COLUMN_NAMES = (
    "launch_id", "engine", "model_dir", "host", "port", "tp", "spec", "argv", "env",
    "dump_tool", "dump_path", "log_path", "pid", "pgid", "proc_start", "status", "exit_code",
    "message", "created_at", "ready_at", "ended_at",
)  # fmt: skip
_SELECT = "SELECT " + ", ".join(_COLUMN_NAMES) + " FROM launches"  # noqa: S608 - constant names


@dataclass
class Launch:
    """One row of ``launches``."""

    launch_id: str
    engine: str
    model_dir: str
    host: str
    port: int
    tp: int
    spec: str
    argv: str
    env: str
    dump_tool: str | None
    dump_path: str | None
    log_path: str
    pid: int | None
    pgid: int | None
    proc_start: int | None
    status: str
    exit_code: int | None
    message: str | None
    created_at: datetime
    ready_at: datetime | None
    ended_at: datetime | None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host  # noqa: S104 - a client URL
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def launch_spec(self) -> LaunchSpec:
        return LaunchSpec.from_json(self.spec)

    def argv_list(self) -> list[str]:
        return json.loads(self.argv)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def health_ok(base_url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout) as r:  # noqa: S310 - loopback URL we built
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


# Seconds the rest of a launch's process group gets to exit once its leader has gone.
LINGER_S = 3.0


def _note(log_path: str | None, text: str) -> None:
    """Append a studio line to a server log (O_APPEND: safe beside the server's own writes),
    so the log says where the studio's stop begins and what came of it."""
    if not log_path:
        return
    try:
        with open(log_path, "ab") as fh:
            fh.write(f"{STUDIO_MARK}{time.strftime('%H:%M:%S')} {text} ---\n".encode())
    except OSError:
        pass  # the launch folder is gone: nothing to annotate


class Supervisor:
    """Starts, watches and stops the launches of one workspace."""

    def __init__(self, ws: Workspace, poll_s: float = 0.5, reattach: bool = True) -> None:
        self.ws = ws
        self.poll_s = poll_s
        self._children: dict[str, subprocess.Popen] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stopping: set[str] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if reattach:
            self.reattach()

    # ---- queries -------------------------------------------------------------------------
    def get(self, launch_id: str) -> Launch:
        row = self.ws.cursor().execute(_SELECT + " WHERE launch_id = ?", [launch_id]).fetchone()
        if row is None:
            raise InputError(f"launch {launch_id}", "no such launch in this workspace")
        return Launch(*row)

    def list(self) -> list[Launch]:
        rows = (
            self.ws.cursor()
            .execute(_SELECT + " ORDER BY created_at DESC, launch_id DESC")
            .fetchall()
        )
        return [Launch(*r) for r in rows]

    def log_tail(self, launch_id: str, lines: int = 40) -> list[str]:
        return tail(self.get(launch_id).log_path, lines)

    # ---- start ---------------------------------------------------------------------------
    def prepare(self, spec: LaunchSpec, *, allow_remote: bool = False) -> tuple[str, Path, Command]:
        """Validate ``spec`` and build its command (nothing runs yet)."""
        validate(spec, allow_remote=allow_remote)
        launch_id = new_id("L")
        launch_dir = self.ws.root / "launches" / launch_id
        return launch_id, launch_dir, build(spec, launch_dir)

    def start(
        self,
        spec: LaunchSpec,
        *,
        allow_remote: bool = False,
        command: Command | None = None,
        prepared: tuple[str, Path, Command] | None = None,
    ) -> Launch:
        """Start ``spec`` (or ``command`` in its place: tests and custom servers) and watch it.

        ``prepared``: what :meth:`prepare` returned, its command possibly extended (more
        environment or files): the launch keeps that id and folder."""
        launch_id, launch_dir, cmd = prepared or self.prepare(spec, allow_remote=allow_remote)
        cmd = command or cmd
        for other in self.list():
            if other.active and other.port == spec.port:
                raise InputError(
                    f"port {spec.port}",
                    f"is used by launch {other.launch_id}; stop it or pick another port",
                )
        dump_dir = Path(spec.dump.dump_path) if spec.dump.dump_path else None
        if (
            spec.dump.tool == "msprobe"
            and dump_dir
            and dump_dir.is_dir()
            and any(dump_dir.iterdir())
        ):
            # msprobe writes step<N>/ straight into the dump path: a second run would mix in.
            raise InputError(dump_dir, "already holds files; msprobe needs an empty dump folder")
        if port_in_use(spec.host, spec.port):
            raise InputError(f"port {spec.port}", f"is already in use on {spec.host}")
        launch_dir.mkdir(parents=True, exist_ok=True)
        if spec.dump.dump_path:
            Path(spec.dump.dump_path).mkdir(parents=True, exist_ok=True)
        cmd.write_files()
        log_path = launch_dir / "server.log"
        env = dict(os.environ)
        for key, value in cmd.env.items():
            # PYTHONPATH is prepended so a user's own entries still apply.
            keep = env.get(key) if key == "PYTHONPATH" else None
            env[key] = f"{value}{os.pathsep}{keep}" if keep else value
        with open(log_path, "ab") as log:
            log.write(f"$ {cmd.shell_text()}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    cmd.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=launch_dir, env=env, start_new_session=True,  # its own process group
                )  # fmt: skip
            except FileNotFoundError as exc:
                raise StudioError(
                    f"cannot start {spec.engine}: {cmd.argv[0]} not found ({exc.strerror}); "
                    "install it in this environment or run the shown command yourself"
                ) from exc
        start = procs.start_time(proc.pid)
        with self.ws.transaction() as cur:
            cur.execute(
                "INSERT INTO launches (launch_id, engine, model_dir, host, port, tp, spec, argv,"
                " env, dump_tool, dump_path, log_path, pid, pgid, proc_start, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'starting')",
                [
                    launch_id, spec.engine, spec.model_dir, spec.host, spec.port, spec.tp,
                    spec.to_json(), json.dumps(cmd.argv), json.dumps(cmd.env), spec.dump.tool,
                    spec.dump.dump_path or None, str(log_path), proc.pid, proc.pid, start,
                ],
            )  # fmt: skip
        self.ws.log(
            "launch", f"started {spec.engine} {launch_id} on port {spec.port} (PID {proc.pid})"
        )
        with self._lock:
            self._children[launch_id] = proc
        self._watch(launch_id)
        return self.get(launch_id)

    # ---- watching ------------------------------------------------------------------------
    def reattach(self) -> list[str]:
        """Watch still-running launches again; mark the ones that died unwatched. Returns ids attached."""
        attached = []
        for launch in self.list():
            if not launch.active or launch.launch_id in self._threads:
                continue
            if launch.pid is not None and procs.alive(launch.pid, launch.proc_start):
                attached.append(launch.launch_id)
                self._watch(launch.launch_id)
            else:
                self._finish(
                    launch.launch_id,
                    "lost",
                    None,
                    "the server ended while no studio was watching it; exit code unknown",
                )
        return attached

    def _watch(self, launch_id: str) -> None:
        t = threading.Thread(
            target=self._monitor, args=(launch_id,), name=f"launch-{launch_id}", daemon=True
        )
        self._threads[launch_id] = t
        t.start()

    def _exit_code(self, launch: Launch) -> tuple[bool, int | None]:
        proc = self._children.get(launch.launch_id)
        if proc is not None:
            rc = proc.poll()
            return rc is not None, rc
        assert launch.pid is not None
        return not procs.alive(launch.pid, launch.proc_start), None

    def _monitor(self, launch_id: str) -> None:
        try:
            self._monitor_loop(launch_id)
        except duckdb.ConnectionException:
            pass  # the workspace was closed under us: the next supervisor re-attaches
        finally:
            self._threads.pop(launch_id, None)

    def _monitor_loop(self, launch_id: str) -> None:
        while not self._closed.is_set():
            launch = self.get(launch_id)
            ended, rc = self._exit_code(launch)
            if ended:
                # Leave no orphaned workers behind (a stop in progress gives them their grace).
                if launch.pgid is not None and launch_id not in self._stopping:
                    procs.signal_group(launch.pgid, signal.SIGKILL)
                self._on_exit(launch, rc)
                return
            if launch.status == "starting" and health_ok(launch.base_url):
                with self.ws.transaction() as cur:
                    cur.execute(
                        "UPDATE launches SET status = 'ready', ready_at = current_timestamp"
                        " WHERE launch_id = ? AND status = 'starting'",
                        [launch_id],
                    )
                self.ws.log("launch", f"{launch_id} is ready at {launch.base_url}")
            self._closed.wait(self.poll_s)

    def _on_exit(self, launch: Launch, rc: int | None) -> None:
        if launch.launch_id in self._stopping or launch.status == "stopping":
            self._finish(launch.launch_id, "stopped", rc, "stopped from the studio")
            return
        last = "\n".join(tail(launch.log_path, CRASH_LINES))
        found = diagnose(tail(launch.log_path, DIAGNOSE_LINES))
        label = "last log lines"
        if found.hints or found.lines:  # why first: a worker's traceback scrolls it out
            last = f"{found.text()}\nlast log lines:\n{last}"
            label = "why and last log lines"
        if rc == 0:
            self._finish(
                launch.launch_id, "exited", rc, f"the server exited by itself (exit code 0)\n{last}"
            )
        elif rc is None:
            self._finish(
                launch.launch_id,
                "lost",
                None,
                f"the server ended; exit code unknown (not started by this studio)\n{last}",
            )
        else:
            why = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
            self._finish(
                launch.launch_id,
                "crashed",
                rc,
                f"the server crashed ({why}); {label}:\n{last}",
            )

    def _finish(self, launch_id: str, status: str, rc: int | None, message: str) -> None:
        with self.ws.transaction() as cur:
            cur.execute(
                "UPDATE launches SET status = ?, exit_code = ?, message = ?,"
                " ended_at = current_timestamp WHERE launch_id = ?",
                [status, rc, message, launch_id],
            )
        self.ws.log(
            "launch", f"{launch_id} {status}" + (f" (exit code {rc})" if rc is not None else "")
        )

    # ---- stop ----------------------------------------------------------------------------
    def stop(self, launch_id: str, grace_s: float = 10.0) -> Launch:
        """Stop a launch: SIGTERM to its leader, then its group, then SIGKILL; that group only.

        The leader alone gets the first signal so the engine shuts down in its own order
        (serve-reference tells rank 0 to stop the other ranks; vLLM's API server stops its
        engine core and workers). Signalling the whole group at once killed the workers
        under the leader, whose stop message then failed in gloo ("Connection closed by
        peer") and ended the log with a traceback. Whatever is still in the group when the
        leader has gone (after ``LINGER_S``) or after ``grace_s`` gets SIGTERM, then SIGKILL."""
        launch = self.get(launch_id)
        if not launch.active:
            return launch
        self._stopping.add(launch_id)
        with self.ws.transaction() as cur:
            cur.execute("UPDATE launches SET status = 'stopping' WHERE launch_id = ?", [launch_id])
        pgid = launch.pgid
        same = launch.pid is not None and procs.alive(launch.pid, launch.proc_start)
        if pgid is not None and (same or launch.launch_id in self._children):
            _note(launch.log_path, f"{STOP_REQUESTED}: SIGTERM to the server (PID {launch.pid})")
            if same and launch.pid is not None:
                try:
                    os.kill(launch.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                self._wait_leader(launch, grace_s)
            if not self._wait_group(launch, LINGER_S):
                procs.signal_group(pgid, signal.SIGTERM)
                if not self._wait_group(launch, min(grace_s, LINGER_S)):
                    procs.signal_group(pgid, signal.SIGKILL)
                    self._wait_group(launch, 5.0)
        proc = self._children.get(launch_id)
        rc = proc.wait(5) if proc is not None else None
        thread = self._threads.get(launch_id)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5 + self.poll_s * 4)
        launch = self.get(launch_id)
        if launch.status == "stopping":  # nobody watched it: record the stop ourselves
            self._finish(launch_id, "stopped", rc, "stopped from the studio")
        launch = self.get(launch_id)
        code = "exit code unknown" if launch.exit_code is None else f"exit code {launch.exit_code}"
        _note(launch.log_path, f"stopped ({code})")
        return launch

    def _wait_leader(self, launch: Launch, timeout: float) -> bool:
        """Wait until the launch's leader process has exited (reaping it when it is ours)."""
        deadline = time.monotonic() + timeout
        proc = self._children.get(launch.launch_id)
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return True
            elif launch.pid is None or not procs.alive(launch.pid, launch.proc_start):
                return True
            time.sleep(0.1)
        return False

    def _wait_group(self, launch: Launch, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        proc = self._children.get(launch.launch_id)
        while True:
            if proc is not None:
                proc.poll()  # reap the leader so it does not linger as a zombie
            if launch.pgid is None or not procs.group_members(launch.pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def wait_status(self, launch_id: str, statuses: tuple[str, ...], timeout: float) -> Launch:
        """Block until the launch reaches one of ``statuses`` (or ends); returns the row."""
        deadline = time.monotonic() + timeout
        while True:
            launch = self.get(launch_id)
            if launch.status in statuses or not launch.active:
                return launch
            if time.monotonic() > deadline:
                raise StudioError(
                    f"launch {launch_id} still {launch.status} after {timeout:.0f} s; see {launch.log_path}"
                )
            time.sleep(0.2)

    def close(self) -> None:
        """Stop watching (servers keep running; a later supervisor re-attaches)."""
        self._closed.set()
        for t in list(self._threads.values()):
            t.join(2)

    def describe(self, launch: Launch) -> dict[str, Any]:
        return {
            "launch": launch.launch_id, "engine": launch.engine, "status": launch.status,
            "url": launch.base_url, "pid": launch.pid, "exit_code": launch.exit_code,
            "model": launch.model_dir, "tp": launch.tp, "dump": launch.dump_tool or "",
            "log": launch.log_path,
        }  # fmt: skip
