"""KV block allocator with prefix caching.

Blocks are reference counted. A full block is identified by a chained hash (parent block's hash + its own
tokens), so equal prefixes map to the same blocks. A block whose count drops to zero keeps its contents and
hash and sits in an LRU list: a later request with the same prefix takes it back for free, and allocation
evicts the least recently freed cached block only when no never-used block is left. Block 0 is reserved as
the zeroed padding target of the attention gather and is never handed out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

NULL_BLOCK = 0
_ROOT_HASH = 0x5105E7E


def chain_hashes(token_ids: Sequence[int], block_size: int, parent: int = _ROOT_HASH,
                 start_block: int = 0) -> list[int]:
    """Hashes of the full blocks of token_ids from start_block on, each chained to the one before."""
    hashes = []
    for b in range(start_block, len(token_ids) // block_size):
        parent = hash((parent, tuple(token_ids[b * block_size:(b + 1) * block_size])))
        hashes.append(parent)
    return hashes


class OutOfBlocks(RuntimeError):
    """No free block; the scheduler preempts or waits."""


class BlockAllocator:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 2:
            raise ValueError("the KV cache needs at least 2 blocks (one is reserved for padding)")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self._empty: list[int] = list(range(num_blocks - 1, NULL_BLOCK, -1))  # pop() gives low ids first
        self._evictable: OrderedDict[int, None] = OrderedDict()  # ref 0 but holding a cached block, LRU first
        self._hash_of_block: dict[int, int] = {}
        self._block_of_hash: dict[int, int] = {}

    @property
    def num_usable(self) -> int:
        return self.num_blocks - 1

    @property
    def num_free(self) -> int:
        return len(self._empty) + len(self._evictable)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free / self.num_usable

    def allocate(self) -> int:
        if self._empty:
            block = self._empty.pop()
        elif self._evictable:
            block, _ = self._evictable.popitem(last=False)
            del self._block_of_hash[self._hash_of_block.pop(block)]
        else:
            raise OutOfBlocks("no free KV block")
        self.ref_counts[block] = 1
        return block

    def free(self, block: int) -> None:
        if block == NULL_BLOCK or self.ref_counts[block] <= 0:
            raise ValueError(f"freeing block {block} that is not allocated")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            if block in self._hash_of_block:
                self._evictable[block] = None
            else:
                self._empty.append(block)

    def free_all(self, blocks: Sequence[int]) -> None:
        # Free the tail first so that, of a freed sequence, its prefix blocks stay cached the longest.
        for block in reversed(blocks):
            self.free(block)

    def match_prefix(self, block_hashes: Sequence[int]) -> list[int]:
        """Take (ref +1) the cached blocks for the longest prefix of block_hashes that is cached."""
        if not self.enable_prefix_caching:
            return []
        taken: list[int] = []
        for h in block_hashes:
            block = self._block_of_hash.get(h)
            if block is None:
                break
            if self.ref_counts[block] == 0:
                del self._evictable[block]
            self.ref_counts[block] += 1
            taken.append(block)
        return taken

    def register(self, block: int, block_hash: int) -> None:
        """Block now holds the full, computed tokens named by block_hash; make it findable."""
        if not self.enable_prefix_caching or block in self._hash_of_block:
            return
        if block_hash in self._block_of_hash:
            return  # same content already cached in another block; keep that one
        self._hash_of_block[block] = block_hash
        self._block_of_hash[block_hash] = block

    def check_no_leaks(self) -> None:
        """All blocks free (for tests and shutdown): raises if any is still referenced."""
        held = [b for b in range(1, self.num_blocks) if self.ref_counts[b]]
        if held or self.num_free != self.num_usable:
            raise AssertionError(f"KV blocks still held: {held[:20]} (free {self.num_free}/{self.num_usable})")
