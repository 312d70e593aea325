"""The online calibration of the capacity model to what is observed: the latency factors (observed p95 /
modelled p95, smoothed), the capacity learned when there is no profile, and which windows are evidence to
learn from (a steady rate, a steady fleet). Apart from policy.py because it learns; sizing only reads it.
"""

from __future__ import annotations

import math

from sloserve_operator.autoscaler.decide.capacity import CapacityProfile
from sloserve_operator.autoscaler.decide.lengths import mean_lengths
from sloserve_operator.autoscaler.decide.policy_state import MIN_REQUESTS_FOR_LEARNING, PolicyState
from sloserve_operator.autoscaler.observe.observation import RegionObservation

# The budgets are p95s: the model's queueing waits are sized at that quantile. Checked against steady
# simulated load, the model's p95 point is where the fleet serves ~99% of requests within budget.
MODEL_QUANTILE = 0.95
TAIL_CALIBRATION_FROM = 0.9  # calibrate TTFT at the budget's observed quantile when it is at least this
FACTOR_MIN, FACTOR_MAX = 0.5, 4.0  # bounds of the learned latency factors (observed / modelled p95)
FACTOR_SMOOTHING = 0.3  # weight of the newest observation in the factors' moving average
# Calibration skips windows with more waiting requests than this per ready replica: their latency is a
# backlog of the moment (a burst the fleet is not yet sized for), not the replicas' physics.
BACKLOG_PER_REPLICA = 1.0
# Calibration only learns from windows whose rate is within this share of the rate a window earlier.
STATIONARY_CHANGE = 0.3
MIN_CAPACITY = 1e-6  # req/s per replica; below this the model is treated as absent


def stationary(history: list[tuple[float, float]], now: float, window: float) -> bool:
    """Whether the rate a window ago is within STATIONARY_CHANGE of the rate now (or unknown): a window
    straddling a burst's onset or end mixes two loads, and its p95 belongs to neither."""
    if len(history) < 2:
        return True
    before = [r for t, r in history[:-1] if t <= now - window]
    if not before:
        return True
    then, rate = before[-1], history[-1][1]
    return abs(rate - then) <= STATIONARY_CHANGE * max(rate, then, MIN_CAPACITY)


def update_factors(factors: list[float], obs: RegionObservation, profile: CapacityProfile,
                   ttft_budget: float, objective: float, spread: float, tail: float | None,
                   pooled: bool) -> list[float]:
    """Calibrate the profile to what is observed, smoothed: factor = observed p95 / modelled p95 at the
    observed load. The model's shape (queueing, chunked prefill) stays; its scale follows reality.

    TTFT also looks at the tail the objective is about. When the window misses the objective (a share w of
    requests within the budget, TAIL_CALIBRATION_FROM <= w < objective), the budget *is* the observed
    w-quantile, read from the histogram bucket at the budget with no interpolation; budget / modelled
    w-quantile is then the sample if it is the larger. Prompt-length tails make the real TTFT tail heavier
    than the model's exponential one, so the objective can be missed while the p95 looks healthy. Only
    upwards: taken at every w, a factor learned deep in the tail keeps growing with the fleet, because a
    long prompt's own prefill does not shrink with load while the model's TTFT does."""
    if not obs.ready_replicas or (obs.requests_observed or 0) < MIN_REQUESTS_FOR_LEARNING:
        return factors
    if (obs.waiting or 0.0) > BACKLOG_PER_REPLICA * obs.ready_replicas:
        return factors
    prompt, output = mean_lengths(obs, profile)
    state = profile.steady_state((obs.request_rate or 0.0) / obs.ready_replicas, prompt, output, MODEL_QUANTILE,
                                 obs.ready_replicas, spread, pooled, tail)
    if state is None:
        # The model calls the observed load overload, yet it was served: nothing to scale the model by
        # (a window straddling a burst's onset, or a queue the feedback path is already handling).
        return factors
    else:
        samples = [_ratio(obs.ttft_p95, state.ttft_quantile(MODEL_QUANTILE)), _ratio(obs.itl_p95, state.itl_p95)]
        within = obs.ttft_within_budget
        if within is not None and TAIL_CALIBRATION_FROM <= within < objective:
            tail = _ratio(ttft_budget, state.ttft_quantile(within))
            samples[0] = tail if samples[0] is None else max(samples[0], tail)
    updated = list(factors)
    for index, sample in enumerate(samples):
        if sample is not None:
            updated[index] = (1 - FACTOR_SMOOTHING) * updated[index] + FACTOR_SMOOTHING * sample
    return updated


def _ratio(seen: float | None, modelled: float) -> float | None:
    if seen is None:
        return None
    return FACTOR_MAX if not math.isfinite(modelled) else min(max(seen / modelled, FACTOR_MIN), FACTOR_MAX)


def fleet_steady(state: PolicyState, region: str, ready: int, now: float, window: float) -> bool:
    """Whether the ready fleet has had its size for a whole metrics window. A window measured partly on
    another fleet (the one replica that overflowed before the warm one was promoted) says nothing about
    what each replica of this one carries. A region seen for the first time counts as steady."""
    size, since = state.fleet_since.get(region, (ready, now - window))
    if size != ready:
        since = now
    state.fleet_since[region] = (ready, since)
    return now - since >= window


def learn_capacity(previous: float | None, obs: RegionObservation, ratio: float | None, breach: bool,
                   evidence: bool = True) -> float | None:
    """Online estimate of req/s one replica carries within budget: a lower bound raised by healthy
    observations near the budget, an upper bound cut by breaches. No evidence (the fleet changed within the
    window, or a breach while a backlog drains) leaves it as it is: cutting on a recovering fleet's breach
    would pin the estimate at half of what one replica carried, and hold a second replica for good."""
    if not evidence or not obs.ready_replicas or obs.request_rate is None or ratio is None:
        return previous
    if (obs.requests_observed or 0) < MIN_REQUESTS_FOR_LEARNING:
        return previous
    per_replica = obs.request_rate / obs.ready_replicas
    if per_replica <= MIN_CAPACITY:
        return previous
    if breach:
        return per_replica * 0.9 if previous is None else min(previous, per_replica * 0.9)
    if ratio >= 0.5:
        estimate = per_replica / max(ratio, 0.8)
        return estimate if previous is None else max(previous, 0.8 * previous + 0.2 * estimate)
    return previous
