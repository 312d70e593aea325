"""Table-driven tests of policy.decide: one row per situation, the expected direction and reason."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sloserve_operator.api.spec import parse_spec
from sloserve_operator.autoscaler.decide.capacity import load_shipped
from sloserve_operator.autoscaler.decide.lengths import prompt_spread, prompt_tail
from sloserve_operator.autoscaler.decide.policy import PolicyState, decide
from sloserve_operator.autoscaler.observe.observation import RegionObservation

from .helpers import fixture_profile, make_spec, observation, region_obs

PROFILE = fixture_profile()
CAPACITY = PROFILE.max_rate_within_budget(1.0, 0.1, 200, 128)  # ~3 req/s per replica

CASES = [
    # id, current, observation kwargs, expected serving (or a predicate), reason fragment
    ("light load holds (headroom not yet sustained)", 3, dict(ready=3, rate=1.0), 3, "hold 3"),
    ("load above model capacity scales up at once", 2, dict(ready=2, rate=4 * CAPACITY), lambda n: n >= 5, "scale up"),
    ("ttft breach scales up even at low modelled load", 2, dict(ready=2, rate=0.5, ttft=2.0, ttft_within=0.6),
     lambda n: n >= 3, "breach"),
    ("itl breach scales up", 2, dict(ready=2, rate=0.5, itl=0.3, itl_within=0.5), lambda n: n >= 3, "breach"),
    ("breach while pods still start does not stack more", 4, dict(ready=2, rate=0.5, ttft=2.0, ttft_within=0.6),
     4, ""),
    ("missing request rate holds", 3, dict(ready=3, rate=None), 3, "metrics"),
    ("stale metrics hold", 3, dict(ready=3, rate=0.1, stale=True), 3, "metrics"),
    ("max bound caps a huge demand", 2, dict(ready=2, rate=1000.0), 10, "scale up"),
    ("min bound lifts an idle fleet of zero", 0, dict(ready=0, rate=0.0, ttft=None, itl=None, ttft_within=None,
                                                      itl_within=None, observed=0), 1, ""),
]


@pytest.mark.parametrize("name, current, obs_kwargs, expected, fragment", CASES, ids=[c[0] for c in CASES])
def test_single_decision(name, current, obs_kwargs, expected, fragment):
    spec = make_spec(min_replicas=1, max_replicas=10)
    decision = decide(spec, observation(100.0, region_obs(**obs_kwargs)), PolicyState(), 100.0,
                      current_serving={"default": current}, profile=PROFILE)
    serving = decision.serving["default"]
    if callable(expected):
        assert expected(serving), (serving, decision.reason)
    else:
        assert serving == expected, decision.reason
    assert fragment in decision.reason
    assert decision.warm == {"default": 1}
    assert decision.metrics_available == ("metrics" not in fragment)


def test_scale_down_waits_for_the_window_then_steps_by_max_step():
    spec = make_spec(min_replicas=1, max_replicas=10, window="1m", max_step=2)
    state = PolicyState()
    serving = 8
    history = []
    for now in range(0, 200, 10):
        obs = observation(now, region_obs(ready=serving, rate=0.5))
        decision = decide(spec, obs, state, float(now), current_serving={"default": serving}, profile=PROFILE)
        assert decision.serving["default"] >= serving - 2
        history.append((now, decision.serving["default"]))
        serving = decision.serving["default"]
    first_drop = next(t for t, n in history if n < 8)
    assert first_drop >= 60, history  # not before a whole stabilization window of headroom
    assert serving < 8


def test_no_scale_down_while_load_rises():
    spec = make_spec(window="1m")
    state = PolicyState()
    for now in range(0, 120, 10):  # a long, quiet stretch makes the fleet eligible to shrink
        decide(spec, observation(now, region_obs(ready=6, rate=0.2)), state, float(now),
               current_serving={"default": 6}, profile=PROFILE)
    decision = decide(spec, observation(120, region_obs(ready=6, rate=0.3)), state, 120.0,
                      current_serving={"default": 6}, profile=PROFILE)
    assert decision.serving["default"] == 6
    assert "load rising" in decision.reason


def test_all_metrics_missing_reports_unavailable_and_holds():
    spec = make_spec()
    obs = observation(10.0)
    obs = type(obs)(time=10.0, regions={}, problems=("prometheus unreachable",))
    decision = decide(spec, obs, PolicyState(), 10.0, current_serving={"default": 5}, profile=PROFILE)
    assert decision.serving == {"default": 5}
    assert decision.metrics_available is False
    assert "prometheus unreachable" in decision.reason


def test_regions_are_sized_from_their_own_traffic():
    regions = [{"name": "us", "weight": 1}, {"name": "eu", "weight": 1}]
    spec = make_spec(max_replicas=20, regions=regions)
    obs = observation(50.0, region_obs("us", ready=2, rate=4 * CAPACITY), region_obs("eu", ready=2, rate=0.2))
    decision = decide(spec, obs, PolicyState(), 50.0, current_serving={"us": 2, "eu": 2}, profile=PROFILE)
    assert decision.serving["us"] >= 5
    assert decision.serving["eu"] == 2  # no headroom window yet: holds, does not borrow us's load


def test_pending_region_spills_its_deficit_to_the_others():
    regions = [{"name": "us", "weight": 3}, {"name": "eu", "weight": 1}]
    spec = make_spec(max_replicas=30, regions=regions, pending_timeout="5m")
    obs = observation(50.0, region_obs("us", ready=2, rate=0.5), region_obs("eu", ready=1, rate=4 * CAPACITY))
    decision = decide(spec, obs, PolicyState(), 50.0, current_serving={"us": 2, "eu": 1},
                      pending_age={"eu": 400.0}, profile=PROFILE)
    assert decision.serving["eu"] == 1  # held at what actually runs there
    assert decision.serving["us"] >= 2 + 3  # eu's deficit moved to us
    assert decision.degraded and "eu" in decision.degraded and "us" in decision.degraded
    assert decision.warm["eu"] == 0 and decision.warm["us"] == 1


def test_without_profile_feedback_scales_up_on_breach_and_learns_capacity():
    spec = make_spec()
    state = PolicyState()
    decision = decide(spec, observation(10, region_obs(ready=2, rate=6.0, ttft=3.0, ttft_within=0.5)), state, 10.0,
                      current_serving={"default": 2})
    assert decision.serving["default"] >= 3
    assert state.learned_capacity["default"] == pytest.approx(6.0 / 2 * 0.9)


def test_state_round_trips_through_json():
    import json

    spec = make_spec()
    state = PolicyState()
    for now in (0.0, 10.0, 20.0):
        decide(spec, observation(now, region_obs(ready=2, rate=1.0 + now / 10)), state, now,
               current_serving={"default": 2}, profile=PROFILE)
    restored = type(state).from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored.to_dict() == state.to_dict()
    assert type(state).from_dict({"rates": "garbage", "latencyFactor": {"x": [1]}}).rates == {}


def _serving_after(spec, windows: list[RegionObservation]) -> tuple[int, PolicyState]:
    """The CPU profile's policy on 10 ready replicas fed `windows` 30 s apart: its last ask, and its state."""
    state, decision = PolicyState(), None
    for step, obs in enumerate(windows):
        now = 30.0 * step
        decision = decide(spec, observation(now, obs), state, now, current_serving={"default": 10},
                          profile=load_shipped("smollm2-135m-cpu"))
    assert decision is not None
    return decision.serving["default"], state


def test_the_prompts_spread_is_pooled_over_the_length_memory_and_costs_capacity():
    spec = make_spec(max_replicas=100, ttft="3s", itl="300ms")

    def run(spreads: list[float | None]) -> tuple[int, PolicyState]:
        window = region_obs(ready=10, rate=60.0, ttft=1.0, itl=0.05, prompt=400.0, output=20.0)
        return _serving_after(spec, [replace(window, prompt_tokens_spread=spread) for spread in spreads])

    unseen, state = run([None, None])
    assert state.prompt_moments["default"] == []  # no histogram: exponential lengths assumed
    exponential, _ = run([1.0, 1.0])
    assert exponential == unseen
    heavy, state = run([1.0, 3.0])
    assert heavy > exponential  # longer prompts attend more: the same rate needs more replicas
    # Pooled moments: 100 requests each at mean 400, E[L^2] = 400^2 x 2 and 400^2 x 4, so c^2 = 3 - 1 = 2.
    assert prompt_spread(state, "default", region_obs(prompt=400.0), 60.0) == pytest.approx(2.0)
    restored = PolicyState.from_dict(state.to_dict())
    assert restored.prompt_moments == state.prompt_moments


def test_the_prompts_tail_is_pooled_and_a_longer_one_costs_replicas():
    """The p95 prompt (as a multiple of the mean) from the histogram, request-weighted over the length memory,
    sizes the own prefill's tail; without a histogram the model keeps the mean prompt's exponential."""
    spec = make_spec(max_replicas=100, ttft="1s", itl="300ms")

    def run(tails: list[float | None]) -> tuple[int, PolicyState]:
        window = region_obs(ready=10, rate=30.0, ttft=0.4, itl=0.05, prompt=400.0, output=20.0)
        return _serving_after(spec, [replace(window, prompt_tokens_p95=None if tail is None else tail * 400.0)
                                     for tail in tails])

    unseen, state = run([None, None])
    assert state.prompt_tails["default"] == [] and prompt_tail(state, "default", region_obs(), 60.0) is None
    light, _ = run([2.0, 2.0])
    assert light == unseen  # a tail shorter than an exponential's changes nothing
    heavy, state = run([3.0, 5.0])
    assert heavy > light
    assert prompt_tail(state, "default", region_obs(prompt=400.0), 60.0) == pytest.approx(4.0)  # 100 + 100 requests
    assert PolicyState.from_dict(state.to_dict()).prompt_tails == state.prompt_tails


def test_profile_that_cannot_meet_the_budgets_falls_back_to_learned_capacity():
    from sloserve_operator.autoscaler.decide.capacity import CapacityProfile

    slow = CapacityProfile.from_json({"step": {"baseSeconds": 0.5, "perPrefillTokenSeconds": 0.01,
                                               "perDecodeSeqSeconds": 0.01}})
    assert slow.max_rate_within_budget(1.0, 0.1, 200, 128) == 0.0
    spec = make_spec(max_replicas=20)
    state = PolicyState()
    decide(spec, observation(10, region_obs(ready=2, rate=2.0, ttft=0.5, itl=0.08)), state, 10.0,
           current_serving={"default": 2}, profile=slow)
    assert state.learned_capacity["default"] > 0
    decision = decide(spec, observation(20, region_obs(ready=2, rate=12.0, ttft=0.6, itl=0.08)), state, 20.0,
                      current_serving={"default": 2}, profile=slow)
    assert decision.serving["default"] > 2, decision.reason  # sized from what was learned, not held blind


def run_ticks(spec, state, serving, times, **obs_kwargs):
    """Feed one observation per time in `times`, following the policy's decisions; return (time, serving)."""
    history = []
    for now in times:
        obs = observation(now, region_obs(ready=serving, **obs_kwargs))
        serving = decide(spec, obs, state, float(now), current_serving={"default": serving},
                         profile=PROFILE).serving["default"]
        history.append((now, serving))
    return history


def test_a_short_prompt_phase_does_not_shrink_a_fleet_sized_for_long_prompts_until_the_memory_passes():
    from sloserve_operator.autoscaler.decide.lengths import LENGTH_MEMORY_SECONDS

    spec = make_spec(max_replicas=30, window="1m", max_step=10)
    state = PolicyState()
    # No latencies observed: the profile alone sizes the fleet (no calibration in play).
    quiet = dict(rate=4.0, ttft=None, itl=None, ttft_within=None, itl_within=None)
    long_phase = run_ticks(spec, state, 2, range(0, 300, 10), prompt=700.0, **quiet)
    sized_for_long = long_phase[-1][1]
    assert sized_for_long > 4
    short_phase = run_ticks(spec, state, sized_for_long, range(300, 300 + int(LENGTH_MEMORY_SECONDS), 10),
                            prompt=150.0, **quiet)
    assert min(n for _, n in short_phase) == sized_for_long, short_phase
    # Once the long prompts are out of memory (and a stabilization window has passed), it scales down.
    later = run_ticks(spec, state, sized_for_long, range(300 + int(LENGTH_MEMORY_SECONDS), 1200, 10),
                      prompt=150.0, **quiet)
    assert later[-1][1] < sized_for_long, later


def test_misses_beyond_the_objective_at_a_healthy_p95_raise_the_ttft_factor():
    # The p95 is well within budget, but 3% of requests miss it (a heavy prompt tail): the objective (99%)
    # is missed, so the TTFT calibration moves to the budget's observed quantile and asks for more capacity.
    spec = make_spec(max_replicas=30, window="1m")
    healthy, tail = PolicyState(), PolicyState()
    load = dict(rate=6.0, ttft=0.5, prompt=600.0)
    wanted = {name: run_ticks(spec, state, 4, range(0, 120, 10), ttft_within=within, **load)[-1][1]
              for name, state, within in (("healthy", healthy, 1.0), ("tail", tail, 0.97))}
    assert tail.latency_factor["default"][0] > healthy.latency_factor["default"][0]
    assert wanted["tail"] > wanted["healthy"], wanted


def test_a_recovering_fleet_does_not_teach_a_lower_capacity():
    """One replica overflows at 2 req/s (capacity cut to 1.8); the warm one is promoted and the two drain the
    backlog with p95 still over budget. Those windows mix the old fleet's latencies or a draining queue:
    learning from them would pin the capacity at 0.9 x 1.6 / 2 and hold two replicas at 0.5 req/s for good."""
    spec = make_spec(max_replicas=4, window="1m")
    state = PolicyState()
    breach = dict(rate=2.0, ttft=3.0, ttft_within=0.5)
    decide(spec, observation(0, region_obs(ready=1, **breach)), state, 0.0, current_serving={"default": 1})
    assert state.learned_capacity["default"] == pytest.approx(1.8)
    recovering = dict(rate=1.6, ttft=2.0, ttft_within=0.7)
    for now, waiting in ((10.0, 30.0), (70.0, 20.0), (80.0, 10.0)):  # promoted at 10 s; from 70 s a whole window
        obs = replace(region_obs(ready=2, **recovering), running=4.0, waiting=waiting)
        decide(spec, observation(now, obs), state, now, current_serving={"default": 2})
        assert state.learned_capacity["default"] == pytest.approx(1.8), now
    # A breach on a fleet that has been this size for a window, its queue not draining, is evidence: cut.
    obs = replace(region_obs(ready=2, **recovering), running=4.0, waiting=12.0)
    decide(spec, observation(90.0, obs), state, 90.0, current_serving={"default": 2})
    assert state.learned_capacity["default"] == pytest.approx(1.6 / 2 * 0.9)


def test_a_few_stragglers_long_prompts_do_not_set_the_sizing_length():
    """A 60 s window at a burst's end holds a few dozen requests whose long prompts finished last; the
    remembered mean is pooled over LENGTH_BLOCK_REQUESTS, so it reads the traffic's mean, not theirs."""
    from sloserve_operator.autoscaler.decide.lengths import LENGTH_BLOCK_REQUESTS, _longest_pooled_prompt

    assert LENGTH_BLOCK_REQUESTS > 25
    steady = [(60.0 * i, 400.0, 150.0) for i in range(5)]
    straggler = (300.0, 700.0, 25.0)
    pooled = _longest_pooled_prompt([*steady, straggler], 60.0)
    assert pooled is not None and 400.0 <= pooled < 470.0  # the straggler window is diluted by its neighbours
    # A phase of long prompts holding enough requests is a phase of the traffic: remembered at its own mean.
    phase = [(360.0 + 60.0 * i, 700.0, 150.0) for i in range(2)]
    assert _longest_pooled_prompt([*steady, *phase], 60.0) == pytest.approx(700.0)
    # Too few requests for any block: the pooled mean of what is there.
    assert _longest_pooled_prompt([(0.0, 300.0, 10.0), (60.0, 600.0, 20.0)], 60.0) == pytest.approx(500.0)
    assert _longest_pooled_prompt([], 60.0) is None


def test_state_written_before_request_counts_reads_as_small_windows():
    old = {"promptTokens": {"default": [[0.0, 500.0], [60.0, 600.0]]}}
    windows = PolicyState.from_dict(old).prompt_tokens["default"]
    assert [(t, mean) for t, mean, _ in windows] == [(0.0, 500.0), (60.0, 600.0)]
    assert all(count > 0 for _, _, count in windows)


def test_the_burst_floor_holds_the_recent_bursts_upper_quantile_on_on_off_traffic_only():
    import math

    from sloserve_operator.autoscaler.decide import bursts
    from sloserve_operator.autoscaler.decide.bursts import BURST_GROWTH_MAX, BURST_QUANTILE_Z

    def floor_of(recommendations, rates, now):
        return bursts.burst_floor(recommendations, bursts.on_off(rates, now, 60.0), now)

    def on_off(peaks: list[int]) -> tuple[list[tuple[float, int]], list[tuple[float, float]]]:
        """A minute of each burst at its peak need (and 5 req/s per replica), then two idle minutes."""
        recommendations, rates, now = [], [], 0.0
        for peak in peaks:
            for _ in range(6):
                recommendations.append((now, peak))
                rates.append((now, 5.0 * peak))
                now += 10.0
            for _ in range(12):
                recommendations.append((now, 1))
                rates.append((now, 0.1))
                now += 10.0
        return recommendations, rates

    recommendations, rates = on_off([6, 10, 8])
    now = recommendations[-1][0]
    logs = [math.log(p) for p in (6, 10, 8)]
    mean = sum(logs) / 3
    spread = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    expected = math.ceil(math.exp(mean + BURST_QUANTILE_Z * spread))
    floor = floor_of(recommendations, rates, now)
    assert floor == expected and 10 <= floor <= BURST_GROWTH_MAX * 10
    # One burst is no distribution, and flat traffic has no bursts ending: no floor.
    single, single_rates = on_off([10])
    assert floor_of(single, single_rates, single[-1][0]) == 0
    flat = [(10.0 * i, 8) for i in range(60)]
    assert floor_of(flat, [(t, 40.0) for t, _ in flat], 590.0) == 0
    # Wildly spread bursts: at most BURST_GROWTH_MAX times the largest seen.
    spread_out, spread_rates = on_off([2, 40, 2])
    assert floor_of(spread_out, spread_rates, spread_out[-1][0]) <= BURST_GROWTH_MAX * 40


def test_a_load_aware_router_is_sized_as_one_queue_and_the_spec_says_which_router_there_is():
    """Behind an inference gateway (spec.routing) or any load-aware router, a large fleet's prefill queues act
    as one, so the same load needs fewer replicas than behind a Service's random pick; never fewer than the
    offered load itself."""
    plain = make_spec(max_replicas=200, itl="1s")
    routed = plain.model_copy(update={"routing": parse_spec(
        {"model": {"name": "m"}, "slo": {"ttft": {"p95": "1s"}, "itl": {"p95": "1s"}},
         "routing": {"endpointPicker": {"name": "epp"}}}).routing})
    prompt, output = 600.0, 8.0
    rate = 30 * PROFILE.max_rate_within_budget(1.0, 1.0, prompt, output)

    def asked(spec, **kwargs) -> int:
        obs = region_obs(ready=2, rate=rate, prompt=prompt, output=output)
        decision = decide(spec, observation(100.0, obs), PolicyState(), 100.0, current_serving={"default": 2},
                          profile=PROFILE, **kwargs)
        return decision.serving["default"]

    random_routing, gateway = asked(plain), asked(routed)
    assert gateway < random_routing
    assert asked(plain, load_aware_routing=True) == gateway
    assert asked(routed, load_aware_routing=False) == random_routing
    assert gateway >= rate / PROFILE.max_rate_within_budget(1.0, 1.0, prompt, output, 0.95, gateway, 1.0, True)
