"""Dump format readers: pure functions of paths, never touching the database."""
