"""Point D of seed 004: which prompts would hit a prefix cache, by hashing prompt prefixes.

No KV is reused; the analyzer only says, per request, whether a hashed prefix was seen before
and how many KV blocks that prefix covers (``prefix_cached_blocks``). Several prefix lengths
are hashed so that growing multi-turn prompts still match their earlier turns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

CANDIDATE_LENGTHS = (32, 64, 128, 256, 512, 1024)


def sha1_tokens(tokens: Sequence[int]) -> str:
    """SHA-1 of token ids as little-endian signed int32 (seed 004's prefix_key)."""
    h = hashlib.sha1()  # noqa: S324 - a content key, not a security boundary
    for t in tokens:
        h.update(int(t).to_bytes(4, "little", signed=True))
    return h.hexdigest()


@dataclass(frozen=True)
class RequestPrefixInfo:
    prefix_cache_hit: bool
    prefix_cached_blocks: int
    prefix_key: str


class PrefixCacheAnalyzer:
    """Longest previously seen prompt prefix (among candidate lengths up to ``key_tokens``)."""

    def __init__(self, prefix_cache_key_tokens: int = 256) -> None:
        self.prefix_cache_key_tokens = int(prefix_cache_key_tokens)
        self._seen: dict[str, int] = {}

    def analyze_prompt_tokens(
        self, prompt_tokens: Sequence[int], kv_block_size_tokens: int
    ) -> RequestPrefixInfo:
        n = len(prompt_tokens)
        if n <= 0:
            return RequestPrefixInfo(False, 0, "")
        max_k = min(n, self.prefix_cache_key_tokens)
        lengths = sorted({k for k in CANDIDATE_LENGTHS if k <= max_k} | {max_k})
        best_key, best_len = "", 0
        for k in reversed(lengths):
            key = sha1_tokens(prompt_tokens[:k])
            if key in self._seen:
                best_key, best_len = key, self._seen[key]
                break
        hit = best_len > 0
        if not hit:
            # A miss registers every candidate prefix so later requests can match any of them.
            for k in lengths:
                self._seen.setdefault(sha1_tokens(prompt_tokens[:k]), k)
            # Seed 004's tracer also reports the miss's own prefix as "cached"; a miss has
            # nothing cached yet, so it reports 0 blocks (docs/SPARSE_ATTENTION.md).
            return RequestPrefixInfo(False, 0, sha1_tokens(prompt_tokens[: lengths[-1]]))
        blocks = (best_len + kv_block_size_tokens - 1) // kv_block_size_tokens
        return RequestPrefixInfo(hit, int(blocks), best_key)
