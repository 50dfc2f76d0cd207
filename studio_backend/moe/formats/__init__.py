"""Readers of expert-load files written by serving engines (pure: file -> LoadRecords)."""
