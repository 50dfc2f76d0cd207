"""SYNTHETIC long-context "needle in a haystack" prompts (seeded), RULER-style."""

from __future__ import annotations

import random

from studio_backend.dsa.workloads import Request

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
)


def needle_prompts(n: int, context_chars: int, seed: int = 0) -> list[Request]:
    """``n`` prompts of about ``context_chars`` bytes with a key at a seeded relative depth."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = rng.randrange(10**6, 10**7)
        depth = (i + 0.5) / n
        hay = (FILLER * (context_chars // len(FILLER) + 1))[:context_chars]
        cut = int(len(hay) * depth)
        needle = f" The special magic number is {key}. "
        text = hay[:cut] + needle + hay[cut:]
        out.append(
            Request(i, text + "\nWhat is the special magic number? Answer:", f"needle-{depth:.2f}")
        )
    return out
