"""The clairvoyant oracle is a floor: nothing that meets the objective may cost less than it."""

from __future__ import annotations

from autoscaler.helpers import fixture_profile, make_spec
from sloserve_operator.simulate import scenarios
from sloserve_operator.simulate.autoscalers import StaticPeak
from sloserve_operator.simulate.oracle import BUDGET_SHARES_DOWN, run_oracle, search_shares, size_minute
from sloserve_operator.simulate.run import simulate
from sloserve_operator.simulate.traces import Request

CPU = fixture_profile()
LENGTHS = [(300, 40), (500, 60), (200, 30), (800, 50)]
TAILED = LENGTHS * 10 + [(2500, 40)]  # one prompt in 41 that a busy replica cannot prefill within budget


def smallest_meeting_static(requests, spec, options):
    for size in range(1, spec.scaling.max_replicas + 1):
        result = simulate(requests, CPU, spec, StaticPeak(size), **options)
        if result.within_both >= spec.slo.objective_fraction:
            return result
    raise AssertionError("no fixed fleet meets the objective")


def test_oracle_costs_no_more_than_a_fixed_fleet_that_meets_the_objective():
    # Flat load, heavy-tailed prompts: minutes sized alone (no queue carried over, a few long prompts
    # deciding each minute) gave a schedule that missed the objective in replay or cost more than this.
    spec = make_spec(min_replicas=1, max_replicas=16, warm=0, ttft="1s", itl="150ms")
    requests = scenarios.single_spike(600.0, 12.0, TAILED, factor=1.0, seed=7)
    options = {"cold_start": 120.0, "warmup": 120.0}
    static = smallest_meeting_static(requests, spec, options)
    oracle, minutes = run_oracle(requests, CPU, spec, options)
    assert oracle.within_both >= spec.slo.objective_fraction
    assert oracle.replica_hours <= static.replica_hours + 1e-9
    assert len(minutes) >= 10


def test_oracle_scales_down_where_a_fixed_fleet_cannot():
    spec = make_spec(min_replicas=1, max_replicas=12, warm=0, ttft="1s", itl="150ms")
    requests = scenarios.mmpp_bursty(1500.0, 6.0, LENGTHS, idle_rate=0.0, idle_minutes=(4.0, 6.0),
                                     burst_minutes=(1.0, 2.0), burst_spread=0.0, seed=3)
    options = {"cold_start": 30.0, "warmup": 60.0}
    static = smallest_meeting_static(requests, spec, options)
    oracle, _ = run_oracle(requests, CPU, spec, options)
    assert oracle.within_both >= spec.slo.objective_fraction
    assert oracle.replica_hours < static.replica_hours


def test_a_minute_no_fleet_can_fix_is_not_sized_at_the_maximum():
    # One prompt that alone takes longer than the TTFT budget to prefill among few requests: the minute
    # cannot reach 99% at any size, and must not ask for max_replicas for it.
    spec = make_spec(min_replicas=1, max_replicas=64, warm=0, ttft="1s", itl="150ms")
    minute = [Request(i * 1.5, 300, 40) for i in range(40)] + [Request(30.0, 60000, 10)]
    minute.sort(key=lambda r: r.arrival)
    sizing = size_minute(minute, CPU, spec, spec.slo.objective_fraction, {"cold_start": 60.0})
    assert sizing.fleet <= 4
    assert sizing.within[sizing.fleet] < spec.slo.objective_fraction


def test_a_schedule_just_missing_the_objective_is_refined_not_dropped_a_whole_ladder_step():
    # bursty-cpu: share 1.0 replayed 98.998% and the ladder's next step (0.6) cost 17% more; a replay a few
    # requests better met at 1.0. The search must land near where the verdict flips, either way.
    for flip in (0.93, 0.65, 1.7):
        tried = search_shares(lambda share, flip=flip: share <= flip)
        best = max(share for share in tried if share <= flip)
        assert flip - best <= 1.0 / 2 ** 3 + 1e-9, (flip, tried)  # the widest ladder gap, bisected thrice


def test_the_share_search_stops_where_the_ladder_never_flips():
    assert search_shares(lambda share: False) == [1.0, *BUDGET_SHARES_DOWN]
    assert search_shares(lambda share: True)[-1] == 3.0
