"""SLO admission: refuse at once a request that would wait longer for its first token than its budget allows,
instead of queueing it for a minute.

The expected time to first token of a new request is the prefill work admitted ahead of it (prompt tokens
of admitted requests whose first token has not come yet) plus its own prompt, over the measured prefill rate;
a request with nothing admitted ahead is always admitted.
That rate is measured, not configured: prompt tokens whose first token came, over the seconds during which
some prefill was pending, both decayed with a half-life of HALF_LIFE_SECONDS of such busy time. It counts
whole prompts, cached prefixes included, so prefix-cache hits raise it, and the decodes sharing the steps
lower it: it is the rate this replica actually gets through prompts under its current mix. Until enough
has been measured it starts from a calibration prefill at start-up (app.Runtime) or, without one, admits.

A request admitted but never started (its client left between the check and the engine) would hold its
tokens forever; entries older than `expire_seconds` are dropped so one leak cannot refuse everything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

HALF_LIFE_SECONDS = 5.0  # of busy (prefill pending) time: recent enough to follow load, long enough to be stable
PRIOR_WEIGHT_SECONDS = 0.5  # the start-up calibration counts as this much busy time


@dataclass
class _Pending:
    tokens: int
    since: float


class AdmissionGate:
    """Ledger of admitted prefill work and the measured prefill rate; `expected_ttft` judges a new request."""

    def __init__(self, limit_seconds: float | None, expire_seconds: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_seconds = limit_seconds  # None: never refuse on expected wait
        self.expire_seconds = expire_seconds
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self.pending_tokens = 0
        self._done_tokens = 0.0  # decayed prompt tokens whose first token came
        self._busy_seconds = 0.0  # decayed seconds with prefill pending
        self._last = clock()

    # -- rate ----------------------------------------------------------------------------------------

    def calibrate(self, tokens_per_second: float) -> None:
        """Start the rate from a measured prefill (replaces whatever little was measured before)."""
        if tokens_per_second > 0 and math.isfinite(tokens_per_second):
            self._done_tokens = tokens_per_second * PRIOR_WEIGHT_SECONDS
            self._busy_seconds = PRIOR_WEIGHT_SECONDS

    @property
    def prefill_rate(self) -> float | None:
        """Prompt tokens per second of busy time; None before any measurement."""
        if self._busy_seconds <= 0 or self._done_tokens <= 0:
            return None
        return self._done_tokens / self._busy_seconds

    def _tick(self, now: float) -> None:
        elapsed = max(now - self._last, 0.0)
        self._last = now
        if self.pending_tokens > 0 and elapsed > 0:
            decay = 0.5 ** (elapsed / HALF_LIFE_SECONDS)
            self._done_tokens *= decay
            self._busy_seconds = self._busy_seconds * decay + elapsed

    # -- the ledger ----------------------------------------------------------------------------------

    def expected_ttft(self, tokens: int) -> float | None:
        """Seconds until a new prompt of `tokens` would get its first token; None when no rate is known."""
        now = self.clock()
        self._expire(now)
        rate = self._current_rate(now)
        if rate is None:
            return None
        return (self.pending_tokens + tokens) / rate

    def _current_rate(self, now: float) -> float | None:
        """The rate as if measured now: the busy time since the last first token counts against it, so a
        replica that has stopped getting prompts through looks slower at once, not only once one finishes."""
        if self._busy_seconds <= 0 or self._done_tokens <= 0:
            return None
        elapsed = max(now - self._last, 0.0) if self.pending_tokens > 0 else 0.0
        decay = 0.5 ** (elapsed / HALF_LIFE_SECONDS)
        return (self._done_tokens * decay) / (self._busy_seconds * decay + elapsed)

    def over_limit(self, tokens: int) -> float | None:
        """The expected TTFT when it exceeds the limit (refuse), else None (admit). With nothing admitted
        ahead the request is always admitted: waiting could not make it faster, and it is what measures
        the rate again after a pessimistic calibration."""
        if self.limit_seconds is None:
            return None
        self._expire(self.clock())
        if self.pending_tokens <= 0:
            return None
        expected = self.expected_ttft(tokens)
        if expected is None or expected <= self.limit_seconds:
            return None
        return expected

    def admit(self, request_id: str, tokens: int) -> None:
        now = self.clock()
        self._tick(now)
        previous = self._pending.pop(request_id, None)
        if previous is not None:
            self.pending_tokens -= previous.tokens
        self._pending[request_id] = _Pending(tokens, now)
        self.pending_tokens += tokens

    def first_token(self, request_id: str) -> None:
        """The request's prefill is done: its tokens count as measured work."""
        entry = self._pending.get(request_id)
        if entry is None:
            return
        self._tick(self.clock())
        del self._pending[request_id]
        self.pending_tokens -= entry.tokens
        self._done_tokens += entry.tokens

    def release(self, request_id: str) -> None:
        """The request ended (or was aborted) before its first token: its work leaves the ledger, unmeasured."""
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            self._tick(self.clock())
            self.pending_tokens -= entry.tokens

    def _expire(self, now: float) -> None:
        stale = [rid for rid, entry in self._pending.items() if now - entry.since > self.expire_seconds]
        for request_id in stale:
            self.release(request_id)

    @property
    def pending_requests(self) -> int:
        return len(self._pending)
