"""The workspace handle: DuckDB connection (one writer process), cursors per thread, owner lock."""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from studio_backend.errors import InputError, WorkspaceBusyError
from studio_backend.paths import workspace_dir
from studio_backend.procs import process_alive, process_start
from studio_backend.workspace.faults import WorkspaceFault, corrupt_database
from studio_backend.workspace.migrate import migrate, schema_version
from studio_backend.workspace.tensor_store import TensorStore

DB_NAME = "studio.duckdb"
OWNER_NAME = "owner.json"


def read_owner(root: Path) -> dict[str, Any] | None:
    """The live process that owns ``root`` (a running studio), or None."""
    path = root / OWNER_NAME
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        pid = int(owner["pid"])
        start = owner.get("pid_start")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    # The start time tells a reused PID (a stale owner.json after a crash) from the studio.
    if pid == os.getpid() or not process_alive(pid, start if isinstance(start, str) else None):
        return None
    return owner


def _busy_message(root: Path, owner: dict[str, Any] | None, detail: str = "") -> str:
    who = "another process"
    if owner:
        who = f"the studio (PID {owner['pid']}"
        who += f", {owner['url']})" if owner.get("url") else ")"
    msg = (
        f"workspace {root} is in use by {who}. DuckDB allows one writing process: use the "
        "studio's pages for this action, stop the studio first, or pass --workspace DIR "
        "(or STUDIO_WORKSPACE) to use another workspace."
    )
    return msg + (f" ({detail})" if detail else "")


def _read_only_error(exc: BaseException) -> bool:
    text = str(exc)
    return "Read-only file system" in text or "Permission denied" in text


def _open_read_only(db: Path, first: BaseException) -> duckdb.DuckDBPyConnection:
    """The workspace on a read-only disk: opened for reading (info and listings still work)."""
    try:
        return duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        if _read_only_error(first) and not db.exists():
            raise WorkspaceFault(
                f"{db.parent}: the workspace folder is read-only and holds no database yet; "
                "pass --workspace DIR on a writable disk"
            ) from exc
        raise corrupt_database(db, exc) from exc


def _is_read_only(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return bool(row and row[0])


class Workspace:
    """A workspace directory: ``studio.duckdb``, ``tensors/`` (safetensors) and ``dumps/``."""

    def __init__(self, root: Path, con: duckdb.DuckDBPyConnection, owner: bool) -> None:
        self.root = root
        self.con = con
        self.is_owner = owner
        self.tensors = TensorStore(root / "tensors")
        self._local = threading.local()
        self._write_lock = threading.RLock()

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def dumps_dir(self) -> Path:
        path = self.root / "dumps"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for the calling thread (DuckDB connections are not shared across threads)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self.con.cursor()
            self._local.cursor = cur
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A write transaction on this thread's cursor, serialised with other writer threads."""
        with self._write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def schema_version(self) -> int:
        return schema_version(self.cursor())

    def log(self, kind: str, message: str) -> None:
        """Record an event for the Home page's recent activity."""
        with self._write_lock:
            self.cursor().execute(
                "INSERT INTO activity (kind, message) VALUES (?, ?)", [kind, message]
            )

    def recent_activity(self, limit: int = 20) -> list[tuple[Any, str, str]]:
        return (
            self.cursor()
            .execute('SELECT "at", kind, message FROM activity ORDER BY id DESC LIMIT ?', [limit])
            .fetchall()
        )

    def table_counts(self) -> dict[str, int]:
        """Row count of every table in the workspace, by name."""
        cur = self.cursor()
        names = [
            row[0]
            for row in cur.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY table_name"
            ).fetchall()
        ]
        return {n: int(cur.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0]) for n in names}

    def close(self) -> None:
        service = getattr(self, "read_service", None)
        if service is not None:
            service.close()
        try:
            self.con.close()
        finally:
            if self.is_owner:
                owner_file = self.root / OWNER_NAME
                try:
                    if json.loads(owner_file.read_text())["pid"] == os.getpid():
                        owner_file.unlink()
                except (OSError, ValueError, KeyError):
                    pass


def open_workspace(
    path: str | os.PathLike[str] | None = None,
    *,
    owner: bool = False,
    url: str | None = None,
    read_only: bool = False,
) -> Workspace:
    """Open (creating and migrating) a workspace.

    ``owner=True`` is for the studio server process: it records itself in ``owner.json`` so that
    CLI commands started meanwhile fail with a clear message instead of waiting on the lock, and
    serves read-only queries to them (:mod:`studio_backend.workspace.read_service`). ``read_only=True``
    is for commands that only read: while the studio owns the workspace they get a
    :class:`RemoteWorkspace` whose queries the studio answers.
    """
    root = workspace_dir(path)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, read-only disk
        raise InputError(
            root,
            f"cannot use it as the workspace folder ({exc.strerror or exc}); set "
            "$STUDIO_WORKSPACE or --workspace to a writable folder",
        ) from exc
    holder = read_owner(root)
    if holder is not None:
        sock = holder.get("socket")
        if read_only and isinstance(sock, str) and Path(sock).exists():
            from studio_backend.workspace.read_service import RemoteWorkspace

            return RemoteWorkspace(root, Path(sock))
        raise WorkspaceBusyError(_busy_message(root, holder))
    db = root / DB_NAME
    try:
        con = duckdb.connect(str(db))
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise WorkspaceBusyError(_busy_message(root, read_owner(root), str(exc))) from exc
        if db.is_file() and not os.access(root, os.W_OK) or _read_only_error(exc):
            con = _open_read_only(db, exc)
        else:
            raise corrupt_database(db, exc) from exc
    except duckdb.Error as exc:
        raise corrupt_database(db, exc) from exc
    try:
        migrate(con)
    except duckdb.InvalidInputException:
        if not _is_read_only(con):
            raise
        # A read-only workspace at the current schema is readable as it is.
    except duckdb.Error as exc:
        con.close()
        raise corrupt_database(db, exc) from exc
    ws = Workspace(root, con, owner)
    if owner:
        from studio_backend.workspace.read_service import ReadService, socket_path

        ws.read_service = ReadService(con, socket_path(root))
        record = {
            "pid": os.getpid(),
            "pid_start": process_start(os.getpid()),
            "url": url,
            "started": time.time(),
            "socket": str(ws.read_service.path),
        }
        (root / OWNER_NAME).write_text(json.dumps(record), encoding="utf-8")
    if owner:
        atexit.register(ws.close)
    return ws
