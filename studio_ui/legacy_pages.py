"""Keep Streamlit out of its legacy ``pages/`` mode.

Streamlit treats an app with a ``pages/`` folder as a v1 multipage app until the main script has
called ``st.navigation`` once in that server process. A first request that deep-links to a page
(``/activations?run=...``) therefore runs the page script alone, without run_studio.py: no wide
layout, a sidebar listing file names, and no st.navigation for the rest of the process. Switching
the flag off and rerunning sends that first run through run_studio.py like every other.
"""

from __future__ import annotations

import sys


def leave_legacy_pages_mode() -> None:
    """Rerun through the navigation if this session started in legacy pages/ mode."""
    if "streamlit.runtime" not in sys.modules:
        return  # not inside Streamlit (CLI, render workers): nothing to fix, no 1 s import
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # another Streamlit layout: nothing to fix
        return
    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False
    if get_script_run_ctx() is not None:
        import streamlit as st

        st.rerun()
