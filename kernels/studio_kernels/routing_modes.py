"""The synthetic routing modes (no torch: the CLI lists them at parse time)."""

ROUTINGS = ("disjoint", "uniform", "skewed")
