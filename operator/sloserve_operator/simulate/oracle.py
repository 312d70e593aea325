"""The clairvoyant oracle: the replica-hours floor every policy is reported against.

It knows every future arrival and its lengths. Per minute of the trace it finds, with the simulator itself
(a fixed fleet replaying that minute's own requests, after a short pre-roll of the same load so replicas are
not empty), the smallest whole fleet that serves the objective's share of that minute's requests within both
budgets. The objective is over the whole trace, not per minute, so the misses it allows are then spent where
they save most: minutes whose fleet can lose one replica for the fewest extra misses give it up first, while
the whole trace stays within the objective (greedy, one replica per minute at most).

The schedule is then replayed through the same simulator and actuator as every policy (Oracle): each minute's
fleet is asked for one cold start (plus promotion and one interval) ahead, so it is ready when the minute
begins, and removed as soon as no minute within that lead needs it. Its cost is whole pods, cold starts
included, like everyone's. Its attainment is what that replay measures; a policy that meets the objective
with fewer replica-hours than the oracle means the oracle is wrong (report.verdict says so).

Single-region specs only (the bench's): the per-minute search sizes one fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from sloserve_operator.api.spec import ModelServiceSpec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.simulate.autoscalers import StaticPeak, View
from sloserve_operator.simulate.run import WARMUP_SECONDS, SimResult, simulate, with_preroll
from sloserve_operator.simulate.traces import Request

MINUTE = 60.0
MINUTE_PREROLL = 20.0  # seconds of the minute's own load replayed (unscored) before it, to fill the batches


@dataclass
class MinuteSizing:
    requests: int
    within: dict[int, float] = field(default_factory=dict)  # fleet size -> share within both budgets
    fleet: int = 0  # the size the schedule uses


def _within(requests: list[Request], size: int, profile: CapacityProfile, spec: ModelServiceSpec,
            options: dict) -> float:
    result = simulate(requests, profile, spec, StaticPeak(size), initial_serving=size,
                      warmup=MINUTE_PREROLL, **options)
    return result.within_both


def size_minute(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec, objective: float,
                options: dict) -> MinuteSizing:
    """Smallest fleet meeting `objective` on one minute's requests (arrivals rebased to 0), by galloping
    from the capacity model's guess and bisecting; every size tried is kept (the miss allocation uses them)."""
    low_bound, high_bound = max(spec.scaling.min_replicas, 1), spec.scaling.max_replicas
    sizing = MinuteSizing(len(requests))
    if not requests:
        sizing.fleet = spec.scaling.min_replicas
        return sizing
    prompt = sum(r.prompt_tokens for r in requests) / len(requests)
    output = sum(r.output_tokens for r in requests) / len(requests)
    capacity = profile.max_rate_within_budget(spec.slo.ttft.p95_seconds, spec.slo.itl.p95_seconds, prompt, output)
    guess = math.ceil(len(requests) / MINUTE / capacity) if capacity > 0 else high_bound
    guess = min(max(guess, low_bound), high_bound)

    def meets(size: int) -> bool:
        if size not in sizing.within:
            sizing.within[size] = _within(requests, size, profile, spec, options)
        return sizing.within[size] >= objective

    if meets(guess):
        high, low, step = guess, guess, 1
        while low > low_bound:  # gallop down to a failing size
            low = max(high - step, low_bound)
            if not meets(low):
                break
            high, step = low, step * 2
        else:
            sizing.fleet = high
            return sizing
    else:
        low, high, step = guess, guess, 1
        while True:  # gallop up to a meeting size
            high = min(low + step, high_bound)
            if meets(high) or high == high_bound:
                break
            low, step = high, step * 2
        if not meets(high):
            sizing.fleet = high_bound
            return sizing
    while high - low > 1:  # invariant: low fails, high meets
        middle = (low + high) // 2
        if meets(middle):
            high = middle
        else:
            low = middle
    if high - 1 >= low_bound:
        meets(high - 1)
    sizing.fleet = high
    return sizing


def spend_misses(minutes: list[MinuteSizing], objective: float, floor: int) -> None:
    """Lower by one the minutes whose last replica buys the fewest within-budget requests, while the whole
    trace stays within the objective."""
    total = sum(m.requests for m in minutes)
    budget = (1.0 - objective) * total
    budget -= sum((1.0 - m.within.get(m.fleet, 1.0)) * m.requests for m in minutes)
    options = []
    for m in minutes:
        smaller = m.fleet - 1
        if smaller >= max(floor, 1) and smaller in m.within and m.fleet in m.within:
            extra = (m.within[m.fleet] - m.within[smaller]) * m.requests
            options.append((extra, id(m), m, smaller))
    for extra, _, m, smaller in sorted(options, key=lambda o: (o[0], o[1])):
        if extra > budget:
            break
        budget -= extra
        m.fleet = smaller


def minute_schedule(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec,
                    options: dict | None = None) -> list[MinuteSizing]:
    """Per-minute sizing of a whole (already pre-rolled) trace: minute i covers [60 i, 60 (i + 1))."""
    options = dict(options or {})
    objective = spec.slo.objective_fraction
    count = int(requests[-1].arrival // MINUTE) + 1 if requests else 0
    buckets: list[list[Request]] = [[] for _ in range(count)]
    for request in requests:
        buckets[int(request.arrival // MINUTE)].append(request)
    minutes = [size_minute([replace(r, arrival=r.arrival - i * MINUTE) for r in bucket], profile, spec, objective,
                           options) for i, bucket in enumerate(buckets)]
    spend_misses(minutes, objective, spec.scaling.min_replicas)
    return minutes


@dataclass
class Oracle:
    """Replays a per-minute schedule, each minute's fleet asked for `lead` seconds before the minute."""

    fleets: list[int]
    lead: float  # cold start + promotion + one interval
    interval: float = 5.0
    name: str = "oracle (clairvoyant)"

    def label(self) -> str:
        busy = [f for f in self.fleets if f > 0] or [0]
        return f"per-minute fleet {min(busy)}-{max(busy)}, {self.lead:.0f} s ahead"

    def wanted(self, now: float) -> int:
        first, last = int(now // MINUTE), int((now + self.lead) // MINUTE)
        window = self.fleets[max(first, 0): last + 1]
        return max(window, default=self.fleets[-1] if self.fleets else 0)

    def decide(self, view: View) -> dict[str, tuple[int, int]]:
        return {region: (view.clamp(region, self.wanted(view.now)), 0) for region in view.fleet.regions}


def run_oracle(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec,
               options: dict | None = None) -> tuple[SimResult, list[MinuteSizing]]:
    """The oracle's schedule for `requests` and its replay (scored like every policy's)."""
    options = dict(options or {})
    warmup = min(options.pop("warmup", WARMUP_SECONDS), requests[-1].arrival)
    minute_options = {k: v for k, v in options.items() if k in ("cold_start", "promotion", "window")}
    minutes = minute_schedule(with_preroll(requests, warmup), profile, spec, minute_options)
    lead = options.get("cold_start", 120.0) + options.get("promotion", 2.0) + Oracle([], 0.0).interval
    oracle = Oracle([m.fleet for m in minutes], lead)
    result = simulate(requests, profile, spec, oracle, initial_serving=max(oracle.wanted(0.0), 1), warmup=warmup,
                      **options)
    return result, minutes
