"""The reactive reference replays the oracle's needs one minute late: it cannot see a spike before it starts."""

from __future__ import annotations

from autoscaler.helpers import fixture_profile, make_spec
from sloserve_operator.simulate import scenarios
from sloserve_operator.simulate.oracle import run_oracle
from sloserve_operator.simulate.reactive_reference import reactive_fleets, run_reactive_reference

CPU = fixture_profile()
LENGTHS = [(300, 40), (500, 60), (200, 30), (800, 50)]


def test_a_minutes_need_is_asked_for_only_after_the_minute_and_kept_for_the_memory():
    needs = [2, 2, 9, 2, 2, 2, 2]
    assert reactive_fleets(needs, 1) == [2, 2, 2, 9, 2, 2, 2]  # the spike's minute is served by the fleet before
    assert reactive_fleets(needs, 3) == [2, 2, 2, 9, 9, 9, 2]
    assert reactive_fleets([], 3) == []


def test_the_reference_costs_at_least_the_oracle_and_misses_a_spike_shorter_than_a_cold_start():
    spec = make_spec(min_replicas=1, max_replicas=16, warm=0, ttft="1s", itl="150ms")
    requests = scenarios.single_spike(1200.0, 3.0, LENGTHS, factor=8.0, at=600.0, seed=5)
    options = {"cold_start": 120.0, "warmup": 120.0}
    oracle, minutes = run_oracle(requests, CPU, spec, options)
    reference, memory = run_reactive_reference(requests, CPU, spec, minutes, options)
    assert memory >= 1
    assert oracle.within_both >= spec.slo.objective_fraction
    # Without foresight the spike's first minutes wait a cold start: fewer within budget at any memory, or more cost.
    assert reference.within_both < oracle.within_both or reference.replica_hours > oracle.replica_hours
    assert "reactive" in reference.policy
