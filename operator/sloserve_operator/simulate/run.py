"""The simulation loop: arrivals, replica physics, the autoscaler's ticks, and the scorecard.

Every policy is replayed against the same requests, the same replica physics and the same actuator; only
the decisions differ. The run ends when the last request finishes (or 30 min after the last arrival);
replica-hours are counted over the trace's span (first to last arrival) for every pod in any role.
A pre-roll (the first five minutes mirrored) lets every policy settle before scoring starts.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field, replace

import numpy as np

from sloserve_operator.api.spec import Engine, ModelServiceSpec
from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.autoscaler.decide.placement import (
    region_names,
    region_weights,
    split_by_weight,
    split_plain,
)
from sloserve_operator.load_client import percentile
from sloserve_operator.routing import Router
from sloserve_operator.simulate.autoscalers import Autoscaler, SloservePolicy, StaticPeak, View
from sloserve_operator.simulate.fleet import Fleet, SharedHost
from sloserve_operator.simulate.novelty import unprecedented_shares
from sloserve_operator.simulate.recorder import Recorder
from sloserve_operator.simulate.traces import Request

DRAIN_SECONDS = 1800.0
TIMELINE_STEP = 10
OPENING_SECONDS = 300.0
WARMUP_SECONDS = 300.0


@dataclass
class SimResult:
    policy: str
    config: str
    requests: int
    within_both: float  # fraction of requests meeting both budgets
    minutes_within: float  # fraction of minutes whose p95 TTFT and p95 ITL are within budget
    replica_hours: float
    scale_events: int
    timeline: dict[str, list[float]] = field(default_factory=dict)
    prefix_hit_rate: float | None = None  # share of prompt tokens found in prefix caches (None: no caches)
    ttft_p50: float | None = None  # over scored requests that got a first token, seconds
    ttft_p95: float | None = None
    refused: int = 0  # scored requests admission turned away (counted as misses in within_both)
    miss_causes: dict[str, float] = field(default_factory=dict)  # Recorder.miss_causes over the scored requests
    # margin -> share of the scored misses that arrived in a burst above every recent rate by more than the
    # margin (novelty.py); empty when nothing missed
    misses_unprecedented: dict[float, float] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        return {"policy": self.policy, "config": self.config, "within_both": self.within_both,
                "minutes_within": self.minutes_within, "replica_hours": self.replica_hours,
                "scale_events": self.scale_events}


def initial_size(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec) -> int:
    """Serving replicas at t=0, the same for every adaptive policy: the busiest of the first five minutes
    over the profile's per-replica capacity, as if the fleet had been running before the trace starts
    (a trace cut mid-stream would otherwise punish whoever starts small for a ramp that never was)."""
    opening = [r for r in requests if r.arrival < OPENING_SECONDS]
    if not opening:
        return spec.scaling.min_replicas
    prompt = sum(r.prompt_tokens for r in opening) / len(opening)
    output = sum(r.output_tokens for r in opening) / len(opening)
    capacity = profile.max_rate_within_budget(spec.slo.ttft.p95_seconds, spec.slo.itl.p95_seconds, prompt, output)
    minutes = [0] * (int(OPENING_SECONDS // 60) + 1)
    for request in opening:
        minutes[int(request.arrival // 60)] += 1
    peak = max(minutes) / 60.0
    need = math.ceil(peak / capacity) if capacity > 0 else spec.scaling.max_replicas
    return min(max(need, spec.scaling.min_replicas, 1), spec.scaling.max_replicas)


def into_regions(requests: list[Request], spec: ModelServiceSpec, seed: int = 0) -> list[Request]:
    """Each request in a region the spec places: one from a region the spec does not name (a trace has
    none: Request.region is "default") goes to a region drawn by the spec's weights, as a global load
    balancer splits users by the regions' shares; a random split keeps each region's arrivals Poisson when
    the trace's are. Seeded, so every policy replays the same split."""
    weights = region_weights(spec)
    if all(request.region in weights for request in requests):
        return requests
    names, shares = list(weights), list(weights.values())
    rng = random.Random(seed)
    return [request if request.region in weights else replace(request, region=rng.choices(names, shares)[0])
            for request in requests]


def admission_limit(spec: ModelServiceSpec) -> float | None:
    """The replicas' admission limit: spec.admission, for the bundled runtime (the engine that has it)."""
    if spec.engine != Engine.bundled:
        return None
    return spec.admission.limit_seconds(spec.slo.ttft.p95_seconds)


def simulate(requests: list[Request], profile: CapacityProfile, spec: ModelServiceSpec, autoscaler: Autoscaler,
             *, cold_start: float = 120.0, promotion: float = 2.0, window: float = 60.0,
             initial_serving: int | None = None, warmup: float = WARMUP_SECONDS,
             router: Router | None = None, kv_cache_tokens: float | None = None,
             host: SharedHost | None = None) -> SimResult:
    if not requests:
        raise ValueError("empty trace: nothing to simulate")
    regions = region_names(spec)
    requests = into_regions(requests, spec)
    scored_count = len(requests)
    warmup = min(warmup, requests[-1].arrival)
    requests = with_preroll(requests, warmup)
    last_arrival = requests[-1].arrival
    horizon = last_arrival + DRAIN_SECONDS
    ttft_budget, itl_budget = spec.slo.ttft.p95_seconds, spec.slo.itl.p95_seconds
    recorder = Recorder(regions, horizon + 1, ttft_budget, itl_budget)
    fleet = Fleet(profile, regions, recorder, itl_budget, cold_start=cold_start, promotion=promotion,
                  kv_cache_tokens=kv_cache_tokens, admission_limit=admission_limit(spec), host=host,
                  **({"router": router} if router is not None else {}))
    start = initial_size(requests, profile, spec) if initial_serving is None else initial_serving
    warm_pool = split_plain(spec.scaling.warm_pool.size, region_weights(spec))
    first = split_by_weight(spec, start)
    for region in regions:
        if isinstance(autoscaler, StaticPeak):
            fleet.start_ready(region, autoscaler.replicas, 0, 0.0)
        else:
            warm = warm_pool.get(region, 0) if isinstance(autoscaler, SloservePolicy) else 0
            fleet.start_ready(region, first.get(region, 0), warm, 0.0)

    seconds = int(horizon) + 2
    pods_total = np.zeros(seconds)
    pods_serving = np.zeros(seconds)
    index, count = 0, len(requests)
    next_decision, next_second = autoscaler.interval, 1.0
    events = 0
    last_targets = {r: (fleet.targets[r].serving, fleet.targets[r].warm) for r in regions}
    now = 0.0
    while True:
        arrival = requests[index].arrival if index < count else math.inf
        now = min(arrival, next_decision, fleet.next_timer(), next_second)
        if now > horizon:
            break
        fleet.advance(now)
        fleet.on_time(now)
        while index < count and requests[index].arrival <= now:
            fleet.dispatch(requests[index], now)
            index += 1
        if now >= next_second:
            row = int(now)
            for region in regions:
                running, waiting = fleet.load(region)
                recorder.concurrency(region, now - 1, running + waiting)
            if row < seconds:
                pods_total[row] = len(fleet.pods)
                pods_serving[row] = sum(fleet.serving_count(r) for r in regions)
            next_second += 1.0
        if now >= next_decision:
            for region, (serving, warm) in autoscaler.decide(View(now, fleet, recorder, spec, profile, window)).items():
                fleet.apply(region, serving, warm, now)
                if (serving, warm) != last_targets[region]:
                    events += 1
                    last_targets[region] = (serving, warm)
            next_decision += autoscaler.interval
        if index >= count and not any(pod.engine.outstanding for pod in fleet.pods) and \
                not any(fleet.gateway[r] for r in regions):
            break

    timeline = _timeline(recorder, regions, pods_total, pods_serving, warmup, last_arrival, window)
    ttfts = [o.ttft for o in recorder.outcomes if o.arrival >= warmup]
    span = last_arrival - warmup + 1.0
    hit_rates = [recorder.prefix_hit_rate(r, last_arrival + 1.0, span) for r in regions]
    return SimResult(
        policy=autoscaler.name, config=autoscaler.label(), requests=scored_count,
        within_both=recorder.fraction_within_both(scored_count, since=warmup),
        minutes_within=recorder.fraction_minutes_within(warmup, last_arrival),
        replica_hours=fleet.pod_seconds(warmup, last_arrival) / 3600.0,
        scale_events=events, timeline=timeline,
        prefix_hit_rate=None if kv_cache_tokens is None or None in hit_rates else
        statistics.fmean(hit_rates) if len(hit_rates) > 1 else hit_rates[0],
        ttft_p50=percentile(ttfts, 50),  # nearest rank, as `sloserve load` and `sloserve profile` report
        ttft_p95=percentile(ttfts, 95),
        refused=recorder.refused_count(since=warmup),
        miss_causes=recorder.miss_causes(since=warmup),
        misses_unprecedented=unprecedented_shares([r.arrival for r in requests], recorder.missed_arrivals(warmup),
                                                  NOVELTY_MARGINS, window=window, lead=cold_start),
    )


NOVELTY_MARGINS = (0.1, 0.5)  # a burst 10% (Poisson noise aside) and 50% above every recent rate


def with_preroll(requests: list[Request], warmup: float) -> list[Request]:
    """The trace preceded by its first `warmup` seconds mirrored in time, everything shifted to start at 0.

    Policies start with a fleet sized for the opening load and get the pre-roll to settle into their own
    steady state, as if they had been running before the trace window; only the trace itself is scored.
    """
    if warmup <= 0:
        return list(requests)
    mirrored = [replace(r, arrival=warmup - r.arrival - 1e-6) for r in requests if r.arrival < warmup]
    shifted = [replace(r, arrival=r.arrival + warmup) for r in requests]
    return sorted(mirrored, key=lambda r: r.arrival) + shifted


def _timeline(recorder: Recorder, regions: list[str], pods_total: np.ndarray, pods_serving: np.ndarray,
              start: float, end: float, window: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"t": [], "rate": [], "pods": [], "serving": [], "ttft_p95": [], "itl_p95": []}
    for t in range(int(start) + TIMELINE_STEP, int(end) + 1, TIMELINE_STEP):
        out["t"].append(float(t - start))
        out["rate"].append(sum(recorder.arrival_rate(r, t, window) for r in regions))
        out["pods"].append(float(pods_total[t]))
        out["serving"].append(float(pods_serving[t]))
        ttft, itl, *_ = recorder.latency(regions[0], t, window) if len(regions) == 1 else (None, None)
        out["ttft_p95"].append(math.nan if ttft is None else ttft)
        out["itl_p95"].append(math.nan if itl is None else itl)
    return out
