"""Block allocator and prefix cache: reference counts, LRU reuse, eviction, the reserved null block."""

from __future__ import annotations

import pytest
from sloserve_runtime.engine.kv_cache import NULL_BLOCK, BlockAllocator, OutOfBlocks, chain_hashes


def test_allocate_until_empty_then_free_everything():
    alloc = BlockAllocator(num_blocks=5, block_size=4)
    blocks = [alloc.allocate() for _ in range(4)]
    assert NULL_BLOCK not in blocks and len(set(blocks)) == 4
    assert alloc.num_free == 0 and alloc.usage == 1.0
    with pytest.raises(OutOfBlocks):
        alloc.allocate()
    alloc.free_all(blocks)
    alloc.check_no_leaks()
    with pytest.raises(ValueError):
        alloc.free(blocks[0])  # double free is a bug, not silently ignored


def test_chained_hash_depends_on_the_whole_prefix():
    a = chain_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], 4)
    b = chain_hashes([0, 2, 3, 4, 5, 6, 7, 8], 4)
    assert len(a) == 2  # the partial third block is never hashed
    assert a[0] != b[0] and a[1] != b[1]  # same second block, different parent
    assert chain_hashes([1, 2, 3, 4, 5, 6, 7, 8], 4) == a


def test_prefix_match_shares_blocks_and_counts_references():
    alloc = BlockAllocator(num_blocks=8, block_size=2)
    hashes = chain_hashes([1, 2, 3, 4, 5, 6], 2)
    owned = [alloc.allocate() for _ in hashes]
    for block, h in zip(owned, hashes, strict=True):
        alloc.register(block, h)
    shared = alloc.match_prefix(hashes[:2] + [12345])
    assert shared == owned[:2]
    assert alloc.ref_counts[owned[0]] == 2
    alloc.free_all(owned)
    assert alloc.ref_counts[owned[0]] == 1 and alloc.ref_counts[owned[2]] == 0
    alloc.free_all(shared)
    alloc.check_no_leaks()


def test_freed_cached_blocks_are_reused_then_evicted_lru_first():
    alloc = BlockAllocator(num_blocks=4, block_size=2)  # 3 usable
    hashes = chain_hashes([1, 2, 3, 4], 2)
    blocks = [alloc.allocate() for _ in hashes]
    for block, h in zip(blocks, hashes, strict=True):
        alloc.register(block, h)
    alloc.free_all(blocks)
    assert alloc.num_free == 3  # cached blocks count as free: they can be evicted
    assert alloc.match_prefix(hashes) == blocks  # ... but a hit takes them back intact
    alloc.free_all(blocks)
    fresh = alloc.allocate()  # the never-used block goes first
    assert fresh not in blocks
    evicted = alloc.allocate()  # then the least recently freed: the tail, freed first
    assert evicted == blocks[1]
    assert alloc.match_prefix(hashes) == [blocks[0]]  # the chain stops at the evicted block
    alloc.free_all([fresh, evicted, blocks[0]])
    alloc.check_no_leaks()


def test_prefix_caching_off_never_matches():
    alloc = BlockAllocator(num_blocks=4, block_size=2, enable_prefix_caching=False)
    h = chain_hashes([1, 2], 2)
    block = alloc.allocate()
    alloc.register(block, h[0])
    assert alloc.match_prefix(h) == []
    alloc.free(block)
    alloc.check_no_leaks()
