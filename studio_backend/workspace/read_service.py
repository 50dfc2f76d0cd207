"""Read-only queries from other processes while the studio owns the workspace.

DuckDB lets one process write a database file and then no other process may open it, not even
read-only. So that ``studio info``, listings and stored statistics still work while the studio
runs, the owner serves read-only SQL on a Unix socket (mode 0600, its path in ``owner.json``):
one request per connection, a JSON line ``{"sql", "params"}`` in, the result as an Arrow IPC
stream out (or a JSON error line). Only single SELECT-like statements are executed; anything
else is refused before it runs. :class:`RemoteWorkspace` is the client side: a ``Workspace``
whose cursors send their queries there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from studio_backend.errors import StudioError

_READ_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_MAX_REQUEST = 1 << 20


def socket_path(root: Path) -> Path:
    """A short per-workspace socket path (Unix socket paths are limited to ~107 bytes)."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]  # noqa: S324 - a name
    return Path(tempfile.gettempdir()) / f"studio-{os.getuid()}-{digest}.sock"


def _read_only_sql(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    statements = con.extract_statements(sql)
    if len(statements) != 1 or statements[0].type not in _READ_TYPES:
        raise PermissionError("only one read-only (SELECT) statement per request is served")


class ReadService:
    """The owner's side: a daemon thread answering read-only queries on a Unix socket."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con = con
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only this user may connect
        try:
            self._sock.bind(str(path))
        finally:
            os.umask(old)
        self._sock.listen(8)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="read-service")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rf, conn.makefile("wb") as wf:
            try:
                line = rf.readline(_MAX_REQUEST)
                req = json.loads(line)
                sql, params = str(req["sql"]), list(req.get("params") or [])
                cur = self.con.cursor()
                try:
                    _read_only_sql(cur, sql)
                    table = cur.sql(sql, params=params or None).to_arrow_table()
                finally:
                    cur.close()
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the client
                wf.write(b"E" + json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
                return
            wf.write(b"A")
            with pa.ipc.new_stream(wf, table.schema) as writer:
                writer.write_table(table)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


def query(path: Path, sql: str, params: list[Any] | None = None) -> pa.Table:
    """Run one read-only query through the owner's service."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(120)
        s.connect(str(path))
        s.sendall(json.dumps({"sql": sql, "params": params or []}, default=str).encode() + b"\n")
        with s.makefile("rb") as rf:
            kind = rf.read(1)
            if kind == b"A":
                return pa.ipc.open_stream(rf).read_all()
            detail = json.loads(rf.read() or b"{}").get("error", "no answer")
    raise StudioError(f"the studio refused the query: {detail}")


class RemoteCursor:
    """The subset of a DuckDB cursor the read-only commands use, answered by the owner."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._table: pa.Table | None = None

    def execute(self, sql: str, params: list[Any] | None = None) -> RemoteCursor:
        self._table = query(self._path, sql, params)
        return self

    def _relation(self) -> duckdb.DuckDBPyConnection:
        # Converted back by DuckDB itself, so rows, numpy arrays and DataFrames have exactly the
        # types a local cursor gives (nullable integer columns, timestamps, lists).
        assert self._table is not None, "execute() first"
        con = duckdb.connect()
        con.register("remote_result", self._table)
        return con.execute("SELECT * FROM remote_result")

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._relation().fetchall()

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._relation().fetchone()

    def fetch_arrow_table(self) -> pa.Table:
        assert self._table is not None, "execute() first"
        return self._table

    def fetchnumpy(self) -> dict[str, Any]:
        return self._relation().fetchnumpy()

    def df(self):  # noqa: ANN201 - pandas is imported lazily
        return self._relation().df()

    fetchdf = df

    def close(self) -> None:
        self._table = None


class RemoteWorkspace:
    """A workspace the studio owns, read through its read service (no writes, no log)."""

    is_owner = False
    read_only = True

    def __init__(self, root: Path, sock: Path) -> None:
        from studio_backend.workspace.tensor_store import TensorStore

        self.root = root
        self.socket = sock
        self.tensors = TensorStore(root / "tensors")

    def cursor(self) -> RemoteCursor:
        return RemoteCursor(self.socket)

    def transaction(self):  # noqa: ANN201
        raise StudioError(
            f"workspace {self.root} is owned by the running studio: this command writes, so run "
            "it from the studio's pages, stop the studio, or pass --workspace DIR"
        )

    def log(self, kind: str, message: str) -> None:
        """Reading commands leave no activity record in a workspace they do not own."""

    def close(self) -> None:
        """Nothing to release: every query used its own connection."""

    def schema_version(self) -> int:
        from studio_backend.workspace.migrate import schema_version

        return schema_version(self.cursor())  # type: ignore[arg-type]

    def recent_activity(self, limit: int = 20) -> list[tuple[Any, str, str]]:
        from studio_backend.workspace.db import Workspace

        return Workspace.recent_activity(self, limit)  # type: ignore[arg-type]

    def table_counts(self) -> dict[str, int]:
        from studio_backend.workspace.db import Workspace

        return Workspace.table_counts(self)  # type: ignore[arg-type]
