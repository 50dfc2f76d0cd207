"""Launching inference servers with dump hooks, supervising them, and capturing dump requests."""
