"""A simulated replica's prefix cache: which prompt blocks it still holds, least recently used first.

The runtime's (runtime/sloserve_runtime/engine/kv_cache.py) keeps every computed full block under its
chained hash; a block nobody uses any more stays cached until allocation needs the space, least recently
freed first, and a lookup takes the longest cached prefix, always leaving the prompt's last token to compute.
This keeps the same: an LRU of block hashes whose size is bounded by the KV pool minus what running
sequences hold (`limit_tokens`, given at each insertion).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixCache:
    def __init__(self) -> None:
        self._blocks: OrderedDict[int, int] = OrderedDict()  # block hash -> tokens it covers
        self.tokens = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._blocks

    def match(self, prefix: Sequence[int], prompt_tokens: int, block_tokens: int) -> int:
        """Prompt tokens found cached: the longest run of leading full blocks held (those become the most
        recently used), at most prompt_tokens - 1 (the runtime always computes the last token)."""
        lookable = min(len(prefix), (prompt_tokens - 1) // block_tokens)
        found = 0
        for block_hash in prefix[:lookable]:
            if block_hash not in self._blocks:
                break
            self._blocks.move_to_end(block_hash)
            found += 1
        return found * block_tokens

    def insert(self, prefix: Sequence[int], prompt_tokens: int, block_tokens: int, limit_tokens: float) -> None:
        """The prompt's full blocks are computed: hold them (most recent), then evict down to `limit_tokens`."""
        for block_hash in prefix[: prompt_tokens // block_tokens]:
            if block_hash in self._blocks:
                self._blocks.move_to_end(block_hash)
            else:
                self._blocks[block_hash] = block_tokens
                self.tokens += block_tokens
        self.evict_to(limit_tokens)

    def evict_to(self, limit_tokens: float) -> None:
        while self._blocks and self.tokens > limit_tokens:
            _, tokens = self._blocks.popitem(last=False)
            self.tokens -= tokens
