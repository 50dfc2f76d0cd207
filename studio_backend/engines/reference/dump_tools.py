"""The dump tools the reference engine can run (no torch: the CLI lists them at parse time)."""

TOOLS = ("msit", "msprobe")
