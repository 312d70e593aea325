"""Which replica gets a request: one pure `pick` function per routing policy, shared by the simulator and
local mode (it imports nothing from kube/, local/ or simulate/).

A pick sees the candidates (serving replicas: what is outstanding there, how much prompt work is queued,
how much of this request's prefix the replica is expected to hold) and the request (its prompt length and
chained block hashes, as the runtime's prefix cache names blocks) and returns the index of the chosen one.

- random: what a Kubernetes Service (kube-proxy) does.
- least_outstanding: fewest requests in flight (local mode's router before prefix awareness).
- prefix_affinity: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam 2018; the
  scheme behind KubeAI's CHWBL router), done with rendezvous hashing: the request's affinity key (its
  first `key_blocks` block hashes, past a shared system prompt's first block) ranks the replicas, and the
  first whose load stays within `load_factor` x the mean (+1) takes it; a request with no blocks goes to
  the least outstanding.
- prefix_scorer: the replica with the least prefill work ahead of this request, counting its own prompt
  minus what is expected cached there (queued prefill tokens + uncached tokens), among the replicas whose
  load is within the same bound; ties go to fewer outstanding. This is the shape of llm-d's endpoint
  picker (a prefix-cache scorer weighed against a queue scorer), expressed in one unit, tokens.

"Expected cached" comes from a PrefixIndex: the router's own record of which blocks it sent where (an LRU
per replica bounded by the replica's KV pool), the approximate prefix-cache scoring llm-d does by default;
no replica state is read. `Router` wraps a pick with its index and random source.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

DEFAULT_KEY_BLOCKS = 2
DEFAULT_LOAD_FACTOR = 1.25


@dataclass(frozen=True)
class Candidate:
    """One serving replica as the router sees it."""

    key: Hashable  # stable identity (pod name, URL, simulated pod id)
    outstanding: int  # requests sent there and not finished
    queued_prefill_tokens: int = 0  # prompt tokens sent there and not yet prefilled
    cached_tokens: int = 0  # of this request's prompt, expected to be in that replica's prefix cache


@dataclass(frozen=True)
class RouteRequest:
    """What routing needs to know about a request."""

    prompt_tokens: int
    prefix: tuple[int, ...] = ()  # chained block hashes of the prompt
    block_tokens: int = 16


PickFn = Callable[[Sequence[Candidate], RouteRequest, random.Random], int]

CHARS_PER_TOKEN = 4  # English text through a BPE tokenizer, near enough for routing


def route_request_from_text(text: str, block_tokens: int = 16) -> RouteRequest:
    """A RouteRequest for a prompt the router has not tokenized (local mode's proxy): blocks of
    block_tokens x CHARS_PER_TOKEN characters, chained like the runtime chains token blocks, so prompts
    sharing a leading text share leading block hashes; only the prefix structure matters to routing."""
    size = block_tokens * CHARS_PER_TOKEN
    blocks, parent = [], 0
    for start in range(0, len(text) - size + 1, size):
        digest = hashlib.blake2b(text[start:start + size].encode(), digest_size=8, key=parent.to_bytes(8, "big"))
        parent = int.from_bytes(digest.digest(), "big")
        blocks.append(parent)
    return RouteRequest(max(len(text) // CHARS_PER_TOKEN, 1), tuple(blocks), block_tokens)


def pick_random(candidates: Sequence[Candidate], request: RouteRequest, rng: random.Random) -> int:
    return rng.randrange(len(candidates))


def pick_least_outstanding(candidates: Sequence[Candidate], request: RouteRequest, rng: random.Random) -> int:
    return min(range(len(candidates)), key=lambda i: candidates[i].outstanding)


def _load_bound(candidates: Sequence[Candidate], load_factor: float) -> float:
    """Most requests a replica may hold after taking this one: load_factor x the mean after it, rounded up
    (and at least one more than the mean, so a near-idle fleet is not forced to spread single requests)."""
    mean = (sum(c.outstanding for c in candidates) + 1) / len(candidates)
    return max(math.ceil(load_factor * mean), math.floor(mean) + 1)


def affinity_key(request: RouteRequest, key_blocks: int = DEFAULT_KEY_BLOCKS) -> int | None:
    """The block hash naming the request's first `key_blocks` blocks (None: the prompt has no full block)."""
    if not request.prefix:
        return None
    return request.prefix[min(len(request.prefix), key_blocks) - 1]


def _rank(key: int, candidate: Candidate) -> bytes:
    return hashlib.blake2b(repr((key, candidate.key)).encode(), digest_size=8).digest()


def pick_prefix_affinity(candidates: Sequence[Candidate], request: RouteRequest, rng: random.Random,
                         load_factor: float = DEFAULT_LOAD_FACTOR, key_blocks: int = DEFAULT_KEY_BLOCKS) -> int:
    key = affinity_key(request, key_blocks)
    if key is None:
        return pick_least_outstanding(candidates, request, rng)
    bound = _load_bound(candidates, load_factor)
    order = sorted(range(len(candidates)), key=lambda i: _rank(key, candidates[i]), reverse=True)
    for index in order:
        if candidates[index].outstanding + 1 <= bound:
            return index
    return order[0]  # unreachable: some replica is at or below the mean


def prefill_ahead(candidate: Candidate, request: RouteRequest) -> int:
    """Prompt tokens the replica must prefill before this request's first token, its own uncached part included."""
    return candidate.queued_prefill_tokens + max(request.prompt_tokens - candidate.cached_tokens, 1)


def pick_prefix_scorer(candidates: Sequence[Candidate], request: RouteRequest, rng: random.Random,
                       load_factor: float = DEFAULT_LOAD_FACTOR) -> int:
    bound = _load_bound(candidates, load_factor)
    allowed = [i for i, c in enumerate(candidates) if c.outstanding + 1 <= bound] or list(range(len(candidates)))
    return min(allowed, key=lambda i: (prefill_ahead(candidates[i], request), candidates[i].outstanding))


PICKS: dict[str, PickFn] = {
    "random": pick_random,
    "least-outstanding": pick_least_outstanding,
    "prefix-affinity": pick_prefix_affinity,
    "prefix-scorer": pick_prefix_scorer,
}
USES_INDEX = {"prefix-scorer"}
# Picks that look at the replicas' load, so the fleet's prefill queues act as one (CapacityProfile.steady_state,
# pooled): all but random. Affinity hashing too: it bounds every replica's load at 1.25x the mean, and a
# request without a prefix goes to the least outstanding.
LOAD_AWARE = {"least-outstanding", "prefix-affinity", "prefix-scorer"}


class PrefixIndex:
    """Which blocks the router has sent to each replica, least recently sent first, bounded per replica by
    `capacity_tokens` (the replica's KV pool): the router's estimate of every replica's prefix cache."""

    def __init__(self, capacity_tokens: float) -> None:
        self.capacity_tokens = capacity_tokens
        self._blocks: dict[Hashable, OrderedDict[int, int]] = {}
        self._tokens: dict[Hashable, int] = {}

    def expected_cached(self, key: Hashable, request: RouteRequest) -> int:
        """Tokens of the request's prompt expected cached at `key` (longest run of leading blocks sent there)."""
        blocks = self._blocks.get(key)
        if not blocks:
            return 0
        lookable = min(len(request.prefix), (request.prompt_tokens - 1) // request.block_tokens)
        found = 0
        for block_hash in request.prefix[:lookable]:
            if block_hash not in blocks:
                break
            found += 1
        return found * request.block_tokens

    def record(self, key: Hashable, request: RouteRequest) -> None:
        blocks = self._blocks.setdefault(key, OrderedDict())
        tokens = self._tokens.get(key, 0)
        for block_hash in request.prefix[: request.prompt_tokens // request.block_tokens]:
            if block_hash in blocks:
                blocks.move_to_end(block_hash)
            else:
                blocks[block_hash] = request.block_tokens
                tokens += request.block_tokens
        while blocks and tokens > self.capacity_tokens:
            tokens -= blocks.popitem(last=False)[1]
        self._tokens[key] = tokens

    def forget(self, key: Hashable) -> None:
        """The replica is gone (or restarted with an empty cache)."""
        self._blocks.pop(key, None)
        self._tokens.pop(key, None)

    def keys(self) -> list[Hashable]:
        return list(self._blocks)


@dataclass
class Router:
    """A pick policy with its memory: the prefix index (for the scorer) and a seeded random source."""

    name: str
    capacity_tokens: float = 0.0  # per replica, for the prefix index
    seed: int = 0
    pick: PickFn = field(init=False)
    index: PrefixIndex | None = field(init=False)
    rng: random.Random = field(init=False)

    @property
    def load_aware(self) -> bool:
        return self.name in LOAD_AWARE

    def __post_init__(self) -> None:
        if self.name not in PICKS:
            raise ValueError(f"unknown router {self.name!r}; known: {', '.join(PICKS)}")
        self.pick = PICKS[self.name]
        self.index = PrefixIndex(self.capacity_tokens) if self.name in USES_INDEX else None
        self.rng = random.Random(self.seed)

    def choose(self, candidates: Sequence[Candidate], request: RouteRequest) -> int:
        """Index of the replica to send `request` to; remembers the choice in the prefix index."""
        if not candidates:
            raise ValueError("no replica to route to")
        if self.index is not None and request.prefix:
            candidates = [replace(c, cached_tokens=self.index.expected_cached(c.key, request)) for c in candidates]
        chosen = self.pick(candidates, request, self.rng)
        if self.index is not None and request.prefix:
            self.index.record(candidates[chosen].key, request)
        return chosen

    def forget(self, key: Hashable) -> None:
        if self.index is not None:
            self.index.forget(key)
