"""The workspace: one DuckDB file plus a safetensors tensor store, owned by one process."""

from studio_backend.workspace.db import Workspace, open_workspace

__all__ = ["Workspace", "open_workspace"]
