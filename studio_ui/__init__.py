"""Shared UI pieces: state, widgets, figures, theme (pages import these)."""

from studio_ui.legacy_pages import leave_legacy_pages_mode

leave_legacy_pages_mode()
