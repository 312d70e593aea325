"""simulate/novelty.py: which misses fell in a burst above every recent one."""

from __future__ import annotations

import pytest
from autoscaler.helpers import fixture_profile, make_spec
from sloserve_operator.simulate import scenarios
from sloserve_operator.simulate.autoscalers import StaticPeak
from sloserve_operator.simulate.novelty import unprecedented_shares
from sloserve_operator.simulate.run import simulate


def unprecedented_share(arrivals: list[float], missed: list[float], margin: float = 0.1,
                        **options: float) -> float | None:
    """The share for one margin; None when nothing missed."""
    return unprecedented_shares(arrivals, missed, (margin,), **options).get(margin)


def _steady(start: float, end: float, rate: float) -> list[float]:
    step = 1.0 / rate
    return [start + i * step for i in range(int((end - start) * rate))]


def test_a_burst_above_every_recent_rate_is_unprecedented_and_a_repeat_is_not():
    # 2/s for 20 min, a 10/s burst at minute 20, 2/s again, the same burst at minute 30.
    arrivals = sorted(_steady(0, 1200, 2) + _steady(1200, 1260, 10) + _steady(1260, 1800, 2)
                      + _steady(1800, 1860, 10) + _steady(1860, 2400, 2))
    first_burst, repeat = [1230.0, 1250.0], [1830.0, 1850.0]
    assert unprecedented_share(arrivals, first_burst) == 1.0
    assert unprecedented_share(arrivals, repeat) == 0.0  # the first burst is within the 15-minute memory
    assert unprecedented_share(arrivals, first_burst + repeat) == pytest.approx(0.5)
    assert unprecedented_share(arrivals, []) is None


def test_a_peak_seen_less_than_a_cold_start_ago_does_not_count_as_seen():
    arrivals = sorted(_steady(0, 1200, 2) + _steady(1200, 1400, 10))
    # 150 s into the burst its own first minute is 90 s old: too recent to have been provisioned for.
    assert unprecedented_share(arrivals, [1350.0], lead=120.0) == 1.0
    assert unprecedented_share(arrivals, [1350.0], lead=30.0) == 0.0


def test_a_record_bursts_first_seconds_count_with_the_burst():
    arrivals = sorted(_steady(0, 1200, 2) + _steady(1200, 1400, 10))
    # 5 s into the burst the trailing minute is still near 2/s; the request belongs to the 10/s burst.
    assert unprecedented_share(arrivals, [1205.0]) == 1.0


def test_a_simulated_spike_on_a_fixed_fleet_misses_only_in_the_unprecedented_burst():
    """What the simulator reports for bench/autoscale.py --misses: a fleet that carries the base load and
    not a 10x spike misses inside the spike, and those misses are all in a burst above every recent rate."""
    requests = scenarios.single_spike(1200.0, 1.0, [(300, 40), (500, 60)], factor=10.0, at=900.0, length=60.0,
                                      seed=2)
    result = simulate(requests, fixture_profile(), make_spec(max_replicas=4), StaticPeak(2), initial_serving=2)
    assert result.within_both < 0.99
    assert result.misses_unprecedented[0.1] > 0.9 and result.misses_unprecedented[0.5] > 0.9
