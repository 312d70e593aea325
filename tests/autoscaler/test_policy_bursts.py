"""Property tests (hypothesis) of policy.decide on bursts and spikes: no runaway after a spike, breach
scale-ups bounded by what the observed rate needs, and a first decision after idle that covers a burst."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import assume, given
from hypothesis import strategies as st
from sloserve_operator.autoscaler.decide.bursts import HISTORY_SECONDS
from sloserve_operator.autoscaler.decide.policy import PolicyState, decide

from .helpers import fixture_profile, make_spec, observation, region_obs
from .test_policy_properties import SETTINGS

PROFILE = fixture_profile()
INTERVAL = 10.0
TTFT, ITL = 1.0, 0.1  # make_spec's budgets
BREACH_MULTIPLE = 3  # a breach never asks for more than this multiple of the observed rate's need (plus 3)

lengths = st.tuples(st.floats(100.0, 1500.0), st.floats(20.0, 300.0))


def plain_need(rate: float, prompt: float, output: float) -> int:
    """Replicas the uncalibrated profile says `rate` needs at these lengths, with no headroom (bisection:
    n x capacity(n) grows with n). Examples where one replica cannot meet the budgets are assumed away."""
    def carries(size: int) -> bool:
        return size * PROFILE.max_rate_within_budget(TTFT, ITL, prompt, output, 0.95, size) >= rate

    assume(PROFILE.max_rate_within_budget(TTFT, ITL, prompt, output, 0.95, 1) > 1e-3)
    low, high = 0, 1
    while not carries(high):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if carries(middle) else (middle, high)
    return high


def step(spec, state, now, current, **fields):
    obs = region_obs(**{k: v for k, v in fields.items() if k not in ("running", "waiting")})
    obs = dataclasses.replace(obs, running=fields.get("running"), waiting=fields.get("waiting"))
    return decide(spec, observation(now, obs), state, now, current_serving={"default": current},
                  profile=PROFILE).serving["default"]


@SETTINGS
@given(rate=st.floats(0.5, 8.0), factor=st.floats(3.0, 12.0), spike_ticks=st.integers(1, 12),
       sizes=lengths, max_step=st.integers(1, 4))
def test_after_a_spike_the_fleet_returns_to_the_steady_need(rate, factor, spike_ticks, sizes, max_step):
    prompt, output = sizes
    spec = make_spec(min_replicas=1, max_replicas=400, warm=0, window="2m", max_step=max_step)
    window = spec.scaling.scale_down.stabilization_seconds
    state, current, now = PolicyState(), 1, 0.0
    steady = dict(rate=rate, ttft=0.3, itl=0.02, ttft_within=1.0, itl_within=1.0, prompt=prompt, output=output)
    for _ in range(60):  # ten steady minutes
        current = step(spec, state, now, current, ready=current, **steady)
        now += INTERVAL
    settled = current
    peak = current
    for _ in range(spike_ticks):  # the spike: breached, new pods still starting
        current = step(spec, state, now, current, ready=settled, rate=rate * factor, ttft=8.0, itl=0.05,
                       ttft_within=0.3, itl_within=0.9, prompt=prompt, output=output,
                       running=settled * 8.0, waiting=rate * factor * 20.0)
        peak = max(peak, current)
        now += INTERVAL
    # The burst memory (at most HISTORY_SECONDS) and the stabilization window, then maxStep per interval.
    bound = math.ceil((HISTORY_SECONDS + window) / INTERVAL) + math.ceil((peak - settled) / max_step) + 3
    history = []
    for _ in range(bound):
        current = step(spec, state, now, current, ready=current, **steady)
        history.append(current)
        now += INTERVAL
    assert current <= settled + 1, (settled, peak, history)
    assert peak <= max(settled, BREACH_MULTIPLE * plain_need(rate * factor, prompt, output) + 3), (settled, peak)


@SETTINGS
@given(rate=st.floats(0.1, 150.0), ready=st.integers(1, 60), sizes=lengths, ttft=st.floats(1.01, 30.0),
       within=st.floats(0.0, 0.94), history=st.integers(0, 12), history_rate=st.floats(0.0, 150.0))
def test_a_breach_never_asks_for_more_than_a_multiple_of_what_the_observed_rate_needs(
        rate, ready, sizes, ttft, within, history, history_rate):
    prompt, output = sizes
    spec = make_spec(min_replicas=1, max_replicas=1000, warm=0, window="1m")
    state, now = PolicyState(), 0.0
    for _ in range(history):  # any steady history first, at a rate the fleet carries
        step(spec, state, now, ready, ready=ready, rate=history_rate, ttft=0.3, itl=0.02, prompt=prompt,
             output=output)
        now += INTERVAL
    desired = step(spec, state, now, ready, ready=ready, rate=rate, ttft=ttft, itl=0.05, ttft_within=within,
                   itl_within=1.0, prompt=prompt, output=output)
    needs = [plain_need(r, prompt, output) for r in (rate, history_rate if history else 0.0)]
    assert desired <= max(ready, BREACH_MULTIPLE * max(needs) + 3), (desired, needs)


@SETTINGS
@given(burst=st.floats(5.0, 120.0), idle=st.floats(0.0, 0.3), start=st.integers(1, 4), sizes=lengths,
       idle_ticks=st.integers(6, 40), share=st.floats(0.3, 1.0))
def test_the_first_decision_after_idle_covers_the_bursts_observed_rate(burst, idle, start, sizes, idle_ticks,
                                                                       share):
    prompt, output = sizes
    spec = make_spec(min_replicas=1, max_replicas=1000, warm=0, window="1m")
    state, current, now = PolicyState(), start, 0.0
    for _ in range(idle_ticks):  # idle: a trickle, too few requests to learn from
        current = step(spec, state, now, current, ready=current, rate=idle, ttft=0.2, itl=0.02, prompt=prompt,
                       output=output, observed=idle * 60.0)
        now += INTERVAL
    # The burst's first window: part of it averaged with the quiet before, a queue forming, budgets breached.
    observed = max(burst * share, idle)
    desired = step(spec, state, now, current, ready=current, rate=observed, ttft=5.0, itl=0.05,
                   ttft_within=0.4, itl_within=0.9, prompt=prompt, output=output, observed=observed * 60.0,
                   running=current * 8.0, waiting=burst * 10.0)
    need = plain_need(observed, prompt, output)
    assert desired >= min(need, spec.scaling.max_replicas), (desired, need, current)
