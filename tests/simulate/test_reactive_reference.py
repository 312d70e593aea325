"""The reactive reference replays the oracle's needs one minute late: it cannot see a spike before it starts."""

from __future__ import annotations

from autoscaler.helpers import fixture_profile, make_spec
from sloserve_operator.simulate import scenarios
from sloserve_operator.simulate.oracle import run_oracle
from sloserve_operator.simulate.reactive_reference import (
    reactive_fleets,
    reactive_frontier,
    run_reactive_reference,
)

CPU = fixture_profile()
LENGTHS = [(300, 40), (500, 60), (200, 30), (800, 50)]


def test_a_minutes_need_is_asked_for_only_after_the_minute_and_kept_for_the_memory():
    needs = [2, 2, 9, 2, 2, 2, 2]
    assert reactive_fleets(needs, 1) == [2, 2, 2, 9, 2, 2, 2]  # the spike's minute is served by the fleet before
    assert reactive_fleets(needs, 3) == [2, 2, 2, 9, 9, 9, 2]
    assert reactive_fleets([], 3) == []
    assert reactive_fleets(needs, 1, 1.5) == [3, 3, 3, 14, 3, 3, 3]  # a margin rounds up to whole pods


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


def test_the_frontier_raises_the_margin_per_memory_only_until_the_objective_is_met():
    spec = make_spec(min_replicas=1, max_replicas=16, warm=0, ttft="1s", itl="150ms")
    requests = scenarios.mmpp_bursty(1200.0, 6.0, LENGTHS, idle_rate=0.5, idle_minutes=(1.0, 2.0),
                                     burst_minutes=(1.0, 2.0), seed=4)
    options = {"cold_start": 120.0, "warmup": 120.0}
    _, minutes = run_oracle(requests, CPU, spec, options)
    points = reactive_frontier(requests, CPU, spec, minutes, options, memories=(1, 5), multipliers=(1.0, 2.0, 3.0))
    objective = spec.slo.objective_fraction
    for memory in (1, 5):
        tried = [(multiplier, result) for result, m, multiplier in points if m == memory]
        assert [m for m, _ in tried] == [1.0, 2.0, 3.0][: len(tried)]
        assert all(result.within_both < objective for _, result in tried[:-1])  # stopped at the first meeting it
        costs = [result.replica_hours for _, result in tried]
        assert costs == sorted(costs)  # a larger margin holds more pods
