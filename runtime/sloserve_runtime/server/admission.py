"""SLO admission: refuse at once a request that would wait longer for its first token than its budget allows,
instead of queueing it for a minute.

The expected time to first token of a new request is a linear model fitted to what this replica observed:

    expected = a * (prompt tokens admitted ahead whose first token has not come + its own)
             + b * (sequences running in the engine when it arrives)

`a` is seconds per prompt token (1 / the prefill rate), `b` the seconds each running sequence adds: on a CPU
every engine step also carries the running decodes, so a lone 64-token prefill that takes 0.2 s takes seconds
beside sixteen decodes. The previous estimate (queued tokens over a measured prefill rate, a request with
nothing ahead always admitted) missed that term: on the quickstart at 12 req/s its admitted requests waited
3.2 s / 5.0 s (p50 / p95) against a 1 s limit. Each first token adds one observation (the tokens and
running count at admission, the seconds it took); the fit is least squares over observations decayed by
DECAY per new one, so it follows the current mix, plus two fixed pseudo-observations: the start-up
calibration prefill (app.Runtime; pulls `a` toward the lone-prefill rate) and a weak one pulling `b` to 0
until running sequences have been seen to matter. Until the calibration or a first observation, it admits.

A request is always admitted on an idle replica (nothing pending, nothing running): waiting could not make
it faster. A replica whose oldest admitted request has waited longer than the model says looks at least that
slow at once, not only when that request's first token comes.

A request admitted but never started (its client left between the check and the engine) would hold its
tokens forever; entries older than `expire_seconds` (default the larger of 120 s and 10x the limit) are
dropped so one leak cannot refuse everything.

The gate is pure (stdlib only, the clock injected): the simulator's replica (sloserve_operator/simulate/
replica.py) runs this same gate on its simulated clock, so simulated and live admission decide alike.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

DECAY = 0.9  # weight kept by older observations per new one (~10 observations of memory)
CALIBRATION_WEIGHT = 1.0  # the start-up prefill counts as one observation, never decayed
RUNNING_PRIOR_WEIGHT = 0.1  # pseudo-observation (0 tokens, 1 running, 0 s): b = 0 until data says otherwise
CALIBRATION_PROMPT_TOKENS = 256  # the start-up prefill's length (app.calibrate_prefill_rate; the simulator's too)


@dataclass
class _Pending:
    tokens: int
    since: float
    ahead: int = 0  # its tokens plus those pending when it was admitted
    running: int = 0


@dataclass
class TtftModel:
    """Least squares of seconds ~ a * tokens + b * running over decayed observations (no intercept):
    the sums of the normal equations, so adding an observation and solving are O(1)."""

    stw: float = 0.0  # sum of w * tokens^2
    std: float = 0.0  # sum of w * tokens * running
    sdd: float = 0.0  # sum of w * running^2
    sty: float = 0.0  # sum of w * tokens * seconds
    sdy: float = 0.0  # sum of w * running * seconds
    prior: tuple[float, float, float, float, float] = field(default=(0.0, 0.0, RUNNING_PRIOR_WEIGHT, 0.0, 0.0))
    observations: int = 0

    def calibrate(self, tokens: float, seconds: float) -> None:
        """The start-up prefill, as a fixed pseudo-observation (replaces an earlier calibration)."""
        w = CALIBRATION_WEIGHT
        self.prior = (w * tokens * tokens, 0.0, RUNNING_PRIOR_WEIGHT, w * tokens * seconds, 0.0)

    def observe(self, tokens: float, running: float, seconds: float) -> None:
        self.stw, self.std, self.sdd = DECAY * self.stw, DECAY * self.std, DECAY * self.sdd
        self.sty, self.sdy = DECAY * self.sty, DECAY * self.sdy
        self.stw += tokens * tokens
        self.std += tokens * running
        self.sdd += running * running
        self.sty += tokens * seconds
        self.sdy += running * seconds
        self.observations += 1

    def coefficients(self) -> tuple[float, float] | None:
        """(a, b), both >= 0; None while nothing constrains `a`."""
        stw, std, sdd, sty, sdy = (s + p for s, p in zip((self.stw, self.std, self.sdd, self.sty, self.sdy),
                                                         self.prior, strict=True))
        if stw <= 0:
            return None
        det = stw * sdd - std * std
        if det > 1e-12 * stw * sdd:
            a, b = (sty * sdd - std * sdy) / det, (stw * sdy - std * sty) / det
            if a >= 0 and b >= 0:
                return a, b
        # The unconstrained fit left the quadrant: the better of the two one-coefficient fits.
        a_only = max(sty / stw, 0.0)
        b_only = max(sdy / sdd, 0.0) if sdd > 0 else 0.0

        def sse(a: float, b: float) -> float:
            return a * a * stw + 2 * a * b * std + b * b * sdd - 2 * a * sty - 2 * b * sdy

        return (a_only, 0.0) if sdd <= 0 or sse(a_only, 0.0) <= sse(0.0, b_only) else (0.0, b_only)

    def expected(self, tokens: float, running: float) -> float | None:
        fit = self.coefficients()
        return None if fit is None else fit[0] * tokens + fit[1] * running


class AdmissionGate:
    """Ledger of admitted prefill work and the fitted TTFT model; `over_limit` judges a new request."""

    def __init__(self, limit_seconds: float | None, expire_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_seconds = limit_seconds  # None: never refuse on expected wait
        self.expire_seconds = max(120.0, 10 * (limit_seconds or 0.0)) if expire_seconds is None else expire_seconds
        self.clock = clock
        self.model = TtftModel()
        self._pending: dict[str, _Pending] = {}
        self.pending_tokens = 0
        # Expected vs observed TTFT of admitted requests (decayed like the model): how far off it is.
        self.expected_sum = 0.0
        self.observed_sum = 0.0

    def calibrate(self, tokens_per_second: float, tokens: int = CALIBRATION_PROMPT_TOKENS) -> None:
        """Start `a` from a lone prefill measured at start-up (`tokens` at `tokens_per_second`)."""
        if tokens_per_second > 0 and math.isfinite(tokens_per_second) and tokens > 0:
            self.model.calibrate(tokens, tokens / tokens_per_second)

    @property
    def prefill_rate(self) -> float | None:
        """Prompt tokens per second the model implies with nothing running; None before any measurement."""
        fit = self.model.coefficients()
        return None if fit is None or fit[0] <= 0 else 1.0 / fit[0]

    # -- the ledger ----------------------------------------------------------------------------------

    def expected_ttft(self, tokens: int, running: int = 0) -> float | None:
        """Seconds until a new prompt of `tokens` would get its first token with `running` sequences in the
        engine; None when nothing has been measured."""
        now = self.clock()
        self._expire(now)
        expected = self.model.expected(self.pending_tokens + tokens, running)
        if expected is None:
            return None
        oldest = max((now - entry.since for entry in self._pending.values()), default=0.0)
        return max(expected, oldest)

    def over_limit(self, tokens: int, running: int = 0) -> float | None:
        """The expected TTFT when it exceeds the limit (refuse), else None (admit). On an idle replica the
        request is always admitted: waiting could not make it faster."""
        if self.limit_seconds is None:
            return None
        self._expire(self.clock())
        if self.pending_tokens <= 0 and running <= 0:
            return None
        expected = self.expected_ttft(tokens, running)
        if expected is None or expected <= self.limit_seconds:
            return None
        return expected

    def admit(self, request_id: str, tokens: int, running: int = 0) -> None:
        now = self.clock()
        previous = self._pending.pop(request_id, None)
        if previous is not None:
            self.pending_tokens -= previous.tokens
        self._pending[request_id] = _Pending(tokens, now, self.pending_tokens + tokens, running)
        self.pending_tokens += tokens

    def first_token(self, request_id: str) -> None:
        """The request's prefill is done: its wait is an observation for the model."""
        entry = self._pending.pop(request_id, None)
        if entry is None:
            return
        self.pending_tokens -= entry.tokens
        observed = max(self.clock() - entry.since, 0.0)
        expected = self.model.expected(entry.ahead, entry.running)
        if expected is not None:
            self.expected_sum = DECAY * self.expected_sum + expected
            self.observed_sum = DECAY * self.observed_sum + observed
            log.debug("admission: %s expected %.3fs observed %.3fs (%d tokens ahead, %d running)",
                      request_id, expected, observed, entry.ahead, entry.running)
        self.model.observe(entry.ahead, entry.running, observed)

    def release(self, request_id: str) -> None:
        """The request ended (or was aborted) before its first token: its work leaves the ledger, unmeasured."""
        entry = self._pending.pop(request_id, None)
        if entry is not None:
            self.pending_tokens -= entry.tokens

    def _expire(self, now: float) -> None:
        stale = [rid for rid, entry in self._pending.items() if now - entry.since > self.expire_seconds]
        for request_id in stale:
            self.release(request_id)

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    def state(self) -> dict[str, float | int | None]:
        """For /debug-style endpoints and the live bench: the fit and how it compares with what happened."""
        fit = self.model.coefficients()
        return {"seconds_per_token": fit[0] if fit else None, "seconds_per_running": fit[1] if fit else None,
                "observations": self.model.observations, "expected_sum": self.expected_sum,
                "observed_sum": self.observed_sum, "pending_tokens": self.pending_tokens}
