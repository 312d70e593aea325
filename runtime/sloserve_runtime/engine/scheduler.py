"""Iteration-level continuous batching with chunked prefill, prefix-cache lookup and recompute preemption.

Every step: running sequences first (oldest first; a decode costs one token of the budget, an unfinished
prefill takes the next chunk), then waiting sequences join while there is token budget, a batch slot and
KV blocks. When blocks run out for a running sequence, the newest running sequence is preempted: its blocks
are freed and it goes back to the front of the queue to be recomputed (its full blocks usually come back from
the prefix cache).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sloserve_runtime.engine.kv_cache import BlockAllocator, chain_hashes
from sloserve_runtime.engine.sequence import Sequence, Status


@dataclass
class ScheduledSequence:
    seq: Sequence
    num_new_tokens: int


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)  # single-token steps first
    preempted: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)  # joined the running batch this step
    prefix_lookups: list[tuple[int, int]] = field(default_factory=list)  # (queried, hit) tokens

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, allocator: BlockAllocator, max_batch_size: int, max_batched_tokens: int) -> None:
        if max_batched_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_size and max_batched_tokens must be positive")
        self.allocator = allocator
        self.block_size = allocator.block_size
        self.max_batch_size = max_batch_size
        self.max_batched_tokens = max_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Remove a sequence (finished or aborted) and free its blocks."""
        if seq.status == Status.RUNNING:
            self.running.remove(seq)
        elif seq.status == Status.WAITING:
            self.waiting.remove(seq)
        self._release(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_batched_tokens
        queue = deque(self.running)
        still_running: list[Sequence] = []
        while queue:
            seq = queue.popleft()
            n = min(seq.num_tokens - seq.num_computed, budget)
            if n <= 0:
                still_running.append(seq)  # budget spent: it keeps its blocks and runs next step
                continue
            while not self._grow(seq, seq.num_computed + n):
                victim = queue.pop() if queue else seq
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status != Status.RUNNING:
                continue
            still_running.append(seq)
            out.scheduled.append(ScheduledSequence(seq, n))
            budget -= n
        self.running = still_running
        # New work joins only when nobody had to be preempted (otherwise it would just thrash).
        while self.waiting and not out.preempted and budget > 0 and len(self.running) < self.max_batch_size:
            seq = self.waiting[0]
            queried, hit = self._attach_cached_prefix(seq)
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._grow(seq, seq.num_computed + n):
                self._release(seq)
                break
            self.waiting.popleft()
            seq.status = Status.RUNNING
            self.running.append(seq)
            out.admitted.append(seq)
            out.prefix_lookups.append((queried, hit))
            out.scheduled.append(ScheduledSequence(seq, n))
            budget -= n
        out.scheduled.sort(key=lambda s: s.num_new_tokens != 1)
        return out

    def _attach_cached_prefix(self, seq: Sequence) -> tuple[int, int]:
        """Reuse cached full blocks for the sequence's tokens, always leaving one token to compute."""
        tokens = seq.all_token_ids()
        lookable = tokens[:-1]
        hashes = chain_hashes(lookable, self.block_size)
        blocks = self.allocator.match_prefix(hashes)
        seq.block_ids = blocks
        seq.block_hashes = hashes[:len(blocks)]
        seq.num_registered_blocks = len(blocks)
        seq.num_computed = len(blocks) * self.block_size
        if not seq.output_token_ids:
            seq.num_cached_prompt = seq.num_computed
        return len(tokens), seq.num_computed

    def _grow(self, seq: Sequence, num_tokens: int) -> bool:
        """Give seq enough blocks for num_tokens; False (nothing allocated) when the pool is short."""
        needed = -(-num_tokens // self.block_size) - len(seq.block_ids)
        if needed <= 0:
            return True
        if needed > self.allocator.num_free:
            return False
        seq.block_ids.extend(self.allocator.allocate() for _ in range(needed))
        return True

    def _preempt(self, seq: Sequence) -> None:
        self._release(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)

    def _release(self, seq: Sequence) -> None:
        self.allocator.free_all(seq.block_ids)
        seq.block_ids = []
        seq.block_hashes = []
        seq.num_computed = 0
        seq.num_registered_blocks = 0

    def postprocess(self, scheduled: list[ScheduledSequence]) -> list[Sequence]:
        """After the model ran `scheduled`: advance each sequence past its chunk, publish its completed blocks
        to the prefix cache, and return the sequences that now need a sampled token (all their tokens have KV).
        One place for this bookkeeping: the engine, the speculator's verification step and the tests use it."""
        sampling = []
        for item in scheduled:
            seq = item.seq
            seq.num_computed += item.num_new_tokens
            self.register_full_blocks(seq)
            if seq.num_computed == seq.num_tokens:
                sampling.append(seq)
        return sampling

    def register_full_blocks(self, seq: Sequence) -> None:
        """After a step: publish the sequence's newly completed blocks to the prefix cache."""
        full = seq.num_computed // self.block_size
        if full <= seq.num_registered_blocks:
            return
        if len(seq.block_hashes) < full:
            tokens = seq.token_slice(0, full * self.block_size)
            parent = seq.block_hashes[-1] if seq.block_hashes else None
            start = len(seq.block_hashes)
            seq.block_hashes.extend(chain_hashes(tokens, self.block_size, start_block=start,
                                                 **({"parent": parent} if parent is not None else {})))
        for b in range(seq.num_registered_blocks, full):
            self.allocator.register(seq.block_ids[b], seq.block_hashes[b])
        seq.num_registered_blocks = full
