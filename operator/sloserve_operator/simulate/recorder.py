"""What the simulated fleet reports, kept the way Prometheus would keep it, and the Observations made from it.

Per region and per simulated second: histograms of TTFT and of inter-token gaps whose bucket boundaries
include the SLO budgets exactly (as the runtime's do), arrivals, finished requests and their token counts,
and the runtime's prompt-length histogram (its own bucket boundaries, so the spread the policy reads is
estimated exactly as it would be from a real fleet).
An Observation over a window is then computed like the MetricsSource computes it from Prometheus: p95 by
histogram_quantile's linear interpolation, the within-budget fraction exactly from the budget's bucket.
Per-request outcomes are kept too, for the report (not for the policies).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import numpy as np
from sloserve_runtime.server.metrics import PROMPT_LENGTH_BUCKETS

from sloserve_operator.autoscaler.decide.capacity import PROMPT_TAIL_QUANTILE
from sloserve_operator.autoscaler.observe.observation import RegionObservation, with_refusals
from sloserve_operator.autoscaler.observe.sources import histogram_quantile, length_spread
from sloserve_operator.simulate.traces import Request

BREACH_FRACTION = 0.95  # a p95 is within budget iff at least 95% of samples are


def bucket_bounds(*budgets: float) -> list[float]:
    """~100 log-spaced upper bounds from 1 ms to 20 min plus each budget exactly."""
    bounds = set(float(b) for b in np.geomspace(0.001, 1200.0, 100))
    bounds.update(float(b) for b in budgets)
    return sorted(bounds)


def cumulative_buckets(bounds: list[float], counts: np.ndarray) -> dict[float, float]:
    """Non-cumulative bucket counts (last entry +Inf) as the cumulative {upper bound: count} Prometheus keeps,
    so the simulator's quantiles come from the operator's own histogram_quantile."""
    cumulative = np.cumsum(counts)
    buckets = {bound: float(cumulative[i]) for i, bound in enumerate(bounds)}
    buckets[math.inf] = float(cumulative[-1])
    return buckets


def spread_of_counts(counts: np.ndarray) -> float | None:
    """The prompts' spread from per-bucket counts of the runtime's prompt-length histogram (last: +Inf)."""
    return length_spread(cumulative_buckets(list(PROMPT_LENGTH_BUCKETS), counts))


def tail_of_counts(counts: np.ndarray) -> float | None:
    """The prompts' PROMPT_TAIL_QUANTILE (tokens) from the same per-bucket counts, as Prometheus interpolates it."""
    return histogram_quantile(PROMPT_TAIL_QUANTILE, cumulative_buckets(list(PROMPT_LENGTH_BUCKETS), counts))


def _bucket_counts(prompt_lengths: list[int]) -> np.ndarray:
    counts = np.zeros(len(PROMPT_LENGTH_BUCKETS) + 1, dtype=np.int64)
    for length in prompt_lengths:
        counts[bisect_left(PROMPT_LENGTH_BUCKETS, length)] += 1
    return counts


def observed_spread(prompt_lengths: list[int]) -> float | None:
    """The prompts' spread as the policy reads it: from the runtime's prompt-length histogram."""
    return spread_of_counts(_bucket_counts(prompt_lengths))


def observed_tail(prompt_lengths: list[int]) -> float | None:
    """The prompts' p95 (tokens) as the policy reads it: from the runtime's prompt-length histogram."""
    return tail_of_counts(_bucket_counts(prompt_lengths))


@dataclass
class Outcome:
    arrival: float
    ttft: float
    gaps: int
    slow_gaps: int
    finished_at: float


class RegionSeries:
    def __init__(self, seconds: int, buckets: int) -> None:
        self.ttft = np.zeros((seconds, buckets + 1), dtype=np.int64)
        self.itl = np.zeros((seconds, buckets + 1), dtype=np.int64)
        self.arrivals = np.zeros(seconds, dtype=np.int64)
        self.finished = np.zeros(seconds, dtype=np.int64)
        self.prompt_tokens = np.zeros(seconds, dtype=np.float64)
        self.prompt_lengths = np.zeros((seconds, len(PROMPT_LENGTH_BUCKETS) + 1), dtype=np.int64)
        self.output_tokens = np.zeros(seconds, dtype=np.float64)
        self.concurrency = np.zeros(seconds, dtype=np.float64)  # in flight (queued + running), sampled each second
        self.prefix_queried = np.zeros(seconds, dtype=np.int64)  # prompt tokens looked up in prefix caches
        self.prefix_hits = np.zeros(seconds, dtype=np.int64)  # of those, found cached
        self.refused = np.zeros(seconds, dtype=np.int64)  # turned away by admission (429): misses, and demand


class Recorder:
    """Collects everything per region per second; `observe` turns a window of it into a RegionObservation."""

    def __init__(self, regions: list[str], duration: float, ttft_budget: float, itl_budget: float) -> None:
        self.ttft_budget, self.itl_budget = ttft_budget, itl_budget
        self.bounds = bucket_bounds(ttft_budget, itl_budget)
        self.ttft_index = self.bounds.index(float(ttft_budget))
        self.itl_index = self.bounds.index(float(itl_budget))
        self.seconds = int(math.ceil(duration)) + 1
        self.series = {region: RegionSeries(self.seconds, len(self.bounds)) for region in regions}
        self.outcomes: list[Outcome] = []

    def _row(self, time: float) -> int:
        return min(max(int(time), 0), self.seconds - 1)

    # ---------------------------------------------------------------- the replica-facing side
    def arrival(self, region: str, time: float) -> None:
        self.series[region].arrivals[self._row(time)] += 1

    def ttft(self, region: str, time: float, value: float) -> None:
        self.series[region].ttft[self._row(time), bisect_left(self.bounds, value)] += 1

    def itl(self, region: str, time: float, value: float, count: int) -> None:
        self.series[region].itl[self._row(time), bisect_left(self.bounds, value)] += count

    def finished(self, region: str, time: float, request: Request, ttft: float, gaps: int, slow_gaps: int) -> None:
        series, row = self.series[region], self._row(time)
        series.finished[row] += 1
        series.prompt_tokens[row] += request.prompt_tokens
        series.prompt_lengths[row, bisect_left(PROMPT_LENGTH_BUCKETS, request.prompt_tokens)] += 1
        series.output_tokens[row] += request.output_tokens
        self.outcomes.append(Outcome(request.arrival, ttft, gaps, slow_gaps, time))

    def prefix_cache(self, region: str, time: float, queried: int, hit: int) -> None:
        series, row = self.series[region], self._row(time)
        series.prefix_queried[row] += queried
        series.prefix_hits[row] += hit

    def prefix_hit_rate(self, region: str, now: float, window: float) -> float | None:
        """Share of prompt tokens found cached over the window (None: no lookups), as hits/queries rates."""
        series, rows = self.series[region], self.window_rows(now, window)
        queried = float(series.prefix_queried[rows].sum())
        return float(series.prefix_hits[rows].sum()) / queried if queried else None

    def refused(self, region: str, time: float, request: Request) -> None:
        """A request admission turned away: it has no outcome, so the report counts it a miss."""
        self.series[region].refused[self._row(time)] += 1

    def refused_count(self, since: float = 0.0) -> int:
        return int(sum(s.refused[self._row(since):].sum() for s in self.series.values()))

    def concurrency(self, region: str, time: float, value: float) -> None:
        self.series[region].concurrency[self._row(time)] = value

    # ---------------------------------------------------------------- the policy-facing side
    def window_rows(self, now: float, window: float) -> slice:
        end = self._row(now)
        return slice(max(0, int(now - window)), max(end, 0))

    def latency(self, region: str, now: float, window: float, quantile: float = 0.95
                ) -> tuple[float | None, float | None, float | None, float | None, float]:
        """(ttft_q, itl_q, ttft_within, itl_within, ttft_samples) over the window."""
        series, rows = self.series[region], self.window_rows(now, window)
        ttft_counts, itl_counts = series.ttft[rows].sum(axis=0), series.itl[rows].sum(axis=0)
        ttft_total, itl_total = float(ttft_counts.sum()), float(itl_counts.sum())
        ttft_within = float(ttft_counts[: self.ttft_index + 1].sum()) / ttft_total if ttft_total else None
        itl_within = float(itl_counts[: self.itl_index + 1].sum()) / itl_total if itl_total else None
        return (histogram_quantile(quantile, cumulative_buckets(self.bounds, ttft_counts)),
                histogram_quantile(quantile, cumulative_buckets(self.bounds, itl_counts)), ttft_within, itl_within,
                ttft_total)

    def arrival_rate(self, region: str, now: float, window: float) -> float:
        rows = self.window_rows(now, window)
        span = max(min(window, now), 1e-9)
        return float(self.series[region].arrivals[rows].sum()) / span

    def mean_concurrency(self, region: str, now: float, window: float) -> float:
        rows = self.window_rows(now, window)
        values = self.series[region].concurrency[rows]
        return float(values.mean()) if len(values) else 0.0

    def observe(self, region: str, now: float, window: float, ready_replicas: int, running: float,
                waiting: float) -> RegionObservation:
        series, rows = self.series[region], self.window_rows(now, window)
        ttft_p95, itl_p95, ttft_within, itl_within, samples = self.latency(region, now, window)
        finished = float(series.finished[rows].sum())
        refused = float(series.refused[rows].sum())
        span = max(min(window, now), 1e-9)
        prompt_lengths = series.prompt_lengths[rows].sum(axis=0)
        return RegionObservation(
            region=region, window_seconds=window, ready_replicas=ready_replicas,
            request_rate=self.arrival_rate(region, now, window), refused_rate=refused / span,
            ttft_p95=ttft_p95, itl_p95=itl_p95, ttft_within_budget=with_refusals(ttft_within, samples, refused),
            itl_within_budget=itl_within,
            mean_prompt_tokens=float(series.prompt_tokens[rows].sum()) / finished if finished else None,
            mean_output_tokens=float(series.output_tokens[rows].sum()) / finished if finished else None,
            prompt_tokens_spread=spread_of_counts(prompt_lengths), prompt_tokens_p95=tail_of_counts(prompt_lengths),
            running=running, waiting=waiting, requests_observed=samples,
            prefix_cache_hit_rate=self.prefix_hit_rate(region, now, window),
        )

    # ---------------------------------------------------------------- the report-facing side
    def fraction_within_both(self, total_requests: int, since: float = 0.0) -> float:
        """Requests with TTFT within budget and at most 5% of their gaps over the ITL budget (their own p95
        ITL within budget); requests never finished, refused ones included, count as misses."""
        if total_requests <= 0:
            return 1.0
        return sum(1 for o in self.outcomes if o.arrival >= since and self.within_both(o)) / total_requests

    def within_both(self, outcome: Outcome) -> bool:
        """TTFT within budget and at most 5% of the gaps over the ITL budget (its own p95 ITL within)."""
        return outcome.ttft <= self.ttft_budget and outcome.slow_gaps <= 0.05 * outcome.gaps

    def miss_causes(self, since: float = 0.0) -> dict[str, float]:
        """Why finished requests missed (refusals are counted apart): a first token over the TTFT budget
        ("late"), or a first token in time but more than 5% of gaps over the ITL budget ("slow_itl"); and the
        share of all gaps over the ITL budget. What a live run is compared on, cause by cause."""
        scored = [o for o in self.outcomes if o.arrival >= since]
        late = sum(1 for o in scored if o.ttft > self.ttft_budget)
        slow = sum(1 for o in scored if o.ttft <= self.ttft_budget and o.slow_gaps > 0.05 * o.gaps)
        gaps = sum(o.gaps for o in scored)
        return {"late": late, "slow_itl": slow,
                "slow_gap_share": sum(o.slow_gaps for o in scored) / gaps if gaps else 0.0}

    def missed_arrivals(self, since: float = 0.0) -> list[float]:
        """Arrival times of the requests that missed either budget (late, slow ITL, or refused: a refusal
        is kept by the second it happened, at arrival), in order."""
        missed = [o.arrival for o in self.outcomes if o.arrival >= since and not self.within_both(o)]
        refused = sum(s.refused for s in self.series.values())
        for row in np.nonzero(refused)[0]:
            if row >= since:
                missed += [row + 0.5] * int(refused[row])
        return sorted(missed)

    def fraction_minutes_within(self, start: float, end: float) -> float:
        """Share of whole minutes in [start, end) whose fleet-wide p95 TTFT and p95 ITL are within budget."""
        minutes = max(int((end - start) // 60), 1)
        good = 0
        for minute in range(minutes):
            first = int(start) + minute * 60
            rows = slice(first, first + 60)
            ok = True
            for hist, index in ((lambda s: s.ttft, self.ttft_index), (lambda s: s.itl, self.itl_index)):
                counts = sum(hist(s)[rows].sum(axis=0) for s in self.series.values())
                total = float(counts.sum())
                if total and float(counts[: index + 1].sum()) / total < BREACH_FRACTION:
                    ok = False
            good += ok
        return good / minutes
