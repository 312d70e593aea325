"""The operator's health report: ages of the last successful reconcile / tick, and a wedged handler fails it."""

from __future__ import annotations

import pytest
from sloserve_operator.kube.liveness import HandlerClock, Wedged


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ages_count_only_successful_calls() -> None:
    time = FakeTime()
    clock = HandlerClock(wedged_after=60, clock=time)
    assert clock.check()["lastReconcileAgeSeconds"] is None
    with clock.running("reconcile"):
        time.now += 2
    with pytest.raises(ValueError), clock.running("autoscale"):
        raise ValueError("tick failed")
    time.now += 5
    report = clock.check()
    assert report["lastReconcileAgeSeconds"] == 5.0
    assert report["lastAutoscaleAgeSeconds"] is None  # it raised: not a success
    assert report["runningForSeconds"] == {}


def test_a_handler_running_longer_than_the_limit_fails_the_probe() -> None:
    time = FakeTime()
    clock = HandlerClock(wedged_after=60, clock=time)
    with clock.running("autoscale"):
        time.now += 30
        assert clock.check()["runningForSeconds"] == {"autoscale": 30.0}
        time.now += 31
        with pytest.raises(Wedged, match="autoscale for 61s"):
            clock.check()
    assert clock.check()["lastAutoscaleAgeSeconds"] == 0.0  # it did return in the end
