"""Process-wide UI state: the workspace this server owns and its background services."""

from __future__ import annotations

import os

import streamlit as st

from studio_backend.paths import workspace_dir
from studio_backend.workspace import Workspace, open_workspace


def _server_url() -> str | None:
    try:
        port = st.get_option("server.port")
        address = st.get_option("server.address") or "127.0.0.1"
    except RuntimeError:
        return None
    return f"http://{address}:{port}"


@st.cache_resource(show_spinner=False)
def _open(path: str) -> Workspace:
    # The Streamlit server process is the single DuckDB writer for this workspace.
    return open_workspace(path, owner=True, url=_server_url())


def workspace() -> Workspace:
    """The workspace of this studio ($STUDIO_WORKSPACE or ./workspace), opened once per process."""
    return _open(str(workspace_dir(os.environ.get("STUDIO_WORKSPACE"))))
