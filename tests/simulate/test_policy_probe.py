"""bench/policy_probe.py: a constant is set in every decision module that has it and restored after, a typo or a
non-number is refused up front, and a probed setting reaches the simulated policy (more headroom, more pods)."""

from __future__ import annotations

import random

import pytest
from sloserve_operator.autoscaler.decide import bursts, policy
from sloserve_operator.simulate.traces import Request

from .bench_modules import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("autoscale.py", "autoscale")  # policy_probe imports it by that name, as run from bench/


@pytest.fixture(scope="module")
def probe(bench):
    return load_bench("policy_probe.py", "bench_policy_probe")


def test_setting_parses_and_refuses(probe):
    assert probe.parse_setting(["HEADROOM=1.2", "HISTORY_SECONDS=900"]) == {"HEADROOM": 1.2, "HISTORY_SECONDS": 900.0}
    for bad in (["HEADROM=1"], ["HEADROOM"], ["HEADROOM=x"], ["=1"], ["DEFAULT_COLD_START_SECONDS_=1"]):
        with pytest.raises(ValueError):
            probe.parse_setting(bad)


def test_applied_sets_every_copy_and_restores(probe):
    before = (policy.HISTORY_SECONDS, bursts.HISTORY_SECONDS, policy.HEADROOM)
    with probe.applied({"HISTORY_SECONDS": 600.0, "HEADROOM": 2.0}):
        assert policy.HISTORY_SECONDS == bursts.HISTORY_SECONDS == 600.0  # policy imports it from bursts
        assert policy.HEADROOM == 2.0
    assert (policy.HISTORY_SECONDS, bursts.HISTORY_SECONDS, policy.HEADROOM) == before


def test_probed_setting_reaches_the_simulated_policy(bench, probe):
    rng = random.Random(3)
    arrivals, t = [], 0.0
    while t < 600.0:
        t += rng.expovariate(4.0)
        arrivals.append(Request(t, rng.randint(60, 400), rng.randint(8, 40)))
    probe.SCENARIOS["probe-tiny"] = bench.Scenario("probe-tiny", "dev", "smollm2-135m-cpu", "1.5s", "250ms",
                                                   lambda: arrivals, "Poisson 4/s for 10 minutes")
    try:
        shipped = probe.run_sloserve("probe-tiny")
        with probe.applied({"HEADROOM": 3.0}):
            wider = probe.run_sloserve("probe-tiny")
    finally:
        del probe.SCENARIOS["probe-tiny"]
    assert 0.0 < shipped.replica_hours < wider.replica_hours
    assert shipped.objective == wider.objective == 0.99
