"""Property tests (hypothesis) of policy.decide over random specs, fleets and observation histories."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sloserve_operator.autoscaler.decide.policy import PolicyState, decide

from .helpers import fixture_profile, make_spec, observation, region_obs

PROFILE = fixture_profile()
SETTINGS = settings(max_examples=int(os.environ.get("SLOSERVE_HYPOTHESIS_EXAMPLES", "30")), deadline=None,
                    derandomize=not os.environ.get("SLOSERVE_HYPOTHESIS_EXAMPLES"),
                    suppress_health_check=[HealthCheck.too_slow])

maybe_latency = st.one_of(st.none(), st.floats(0.001, 30.0))
maybe_fraction = st.one_of(st.none(), st.floats(0.0, 1.0))


@st.composite
def region_observations(draw, region: str = "default", ready_max: int = 20):
    return region_obs(
        region,
        ready=draw(st.integers(0, ready_max)),
        rate=draw(st.one_of(st.none(), st.floats(0.0, 200.0))),
        ttft=draw(maybe_latency), itl=draw(maybe_latency),
        ttft_within=draw(maybe_fraction), itl_within=draw(maybe_fraction),
        prompt=draw(st.one_of(st.none(), st.floats(1.0, 8000.0))),
        output=draw(st.one_of(st.none(), st.floats(1.0, 2000.0))),
        observed=draw(st.floats(0.0, 5000.0)),
        stale=draw(st.booleans()),
    )


@st.composite
def bounded_specs(draw):
    low = draw(st.integers(0, 5))
    high = draw(st.integers(max(low, 1), 30))
    use_regions = draw(st.booleans())
    regions = None
    if use_regions:
        regions = [{"name": "us", "weight": draw(st.integers(1, 5)), "minReplicas": draw(st.integers(0, 1))},
                   {"name": "eu", "weight": draw(st.integers(1, 5)), "maxReplicas": draw(st.integers(1, 30))}]
    return make_spec(min_replicas=low, max_replicas=high, warm=draw(st.integers(0, 3)), window="30s",
                     max_step=draw(st.integers(1, 4)), regions=regions)


def _regions(spec) -> list[str]:
    return [r.name for r in spec.placement.regions] or ["default"]


def _region_max(spec, name: str) -> int:
    for region in spec.placement.regions:
        if region.name == name and region.max_replicas is not None:
            return min(region.max_replicas, spec.scaling.max_replicas)
    return spec.scaling.max_replicas


@SETTINGS
@given(data=st.data(), spec=bounded_specs(), use_profile=st.booleans())
def test_never_leaves_bounds(data, spec, use_profile):
    state = PolicyState()
    names = _regions(spec)
    current = {name: data.draw(st.integers(0, _region_max(spec, name))) for name in names}
    for step in range(data.draw(st.integers(1, 6))):
        now = step * 10.0
        obs = observation(now, *[data.draw(region_observations(name)) for name in names])
        decision = decide(spec, obs, state, now, current_serving=current, profile=PROFILE if use_profile else None)
        total = sum(decision.serving.values())
        assert total <= spec.scaling.max_replicas, decision.reason
        floor = min(spec.scaling.min_replicas, sum(_region_max(spec, n) for n in names))
        assert total >= floor, decision.reason
        for region in spec.placement.regions:
            assert region.min_replicas <= decision.serving[region.name], decision.reason
            if region.max_replicas is not None:
                assert decision.serving[region.name] <= region.max_replicas, decision.reason
        current = decision.serving


@SETTINGS
@given(data=st.data(), spec=bounded_specs(), use_profile=st.booleans())
def test_never_scales_down_on_missing_data(data, spec, use_profile):
    state = PolicyState()
    names = _regions(spec)
    current = {name: data.draw(st.integers(0, _region_max(spec, name))) for name in names}
    for step in range(data.draw(st.integers(0, 5))):  # any history first
        now = step * 10.0
        obs = observation(now, *[data.draw(region_observations(name)) for name in names])
        current = decide(spec, obs, state, now, current_serving=current,
                         profile=PROFILE if use_profile else None).serving
    missing = data.draw(st.sampled_from(names))
    broken = data.draw(st.sampled_from(["absent", "stale", "no rate", "no replicas"]))
    regions = []
    for name in names:
        if name != missing:
            regions.append(data.draw(region_observations(name)))
        elif broken == "stale":
            regions.append(region_obs(name, rate=0.0, stale=True))
        elif broken == "no rate":
            regions.append(region_obs(name, rate=None))
        elif broken == "no replicas":
            regions.append(region_obs(name, ready=None, rate=0.0))
    decision = decide(spec, observation(100.0, *regions), state, 100.0, current_serving=current,
                      profile=PROFILE if use_profile else None)
    if sum(current.values()) <= spec.scaling.max_replicas:  # otherwise the fleet maximum wins
        assert decision.serving[missing] >= current[missing], decision.reason
    assert decision.metrics_available is False


@SETTINGS
@given(data=st.data(), use_profile=st.booleans(), rise=st.floats(0.01, 50.0))
def test_never_scales_down_when_load_rises(data, use_profile, rise):
    spec = make_spec(min_replicas=0, max_replicas=40, window="30s", max_step=3)
    state = PolicyState()
    current = {"default": data.draw(st.integers(0, 40))}
    highest = 0.0
    for step in range(data.draw(st.integers(1, 8))):  # a quiet history that makes shrinking eligible
        now = step * 10.0
        obs = data.draw(region_observations())
        obs = region_obs(rate=data.draw(st.floats(0.0, 5.0)), ready=obs.ready_replicas, ttft=obs.ttft_p95,
                         itl=obs.itl_p95, ttft_within=obs.ttft_within_budget, itl_within=obs.itl_within_budget)
        highest = max(highest, obs.request_rate)
        current = decide(spec, observation(now, obs), state, now, current_serving=current,
                         profile=PROFILE if use_profile else None).serving
    # Rising: above every rate of the last window (a new high), not merely above the sample before.
    rising = region_obs(rate=highest + rise, ready=current["default"], ttft=0.1, itl=0.01)
    decision = decide(spec, observation(80.0, rising), state, 80.0, current_serving=current,
                      profile=PROFILE if use_profile else None)
    assert decision.serving["default"] >= current["default"], decision.reason
