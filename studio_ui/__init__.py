"""Shared UI pieces: state, widgets, figures, theme (the page scripts in app_pages/ import these)."""
