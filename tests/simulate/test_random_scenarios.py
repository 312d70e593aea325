"""bench/autoscale.py's random held-out scenarios: a seed must fix them (a check is re-runnable) and different
seeds must draw different traffic (a new seed is an unseen check), within the ranges the named ones use."""

from __future__ import annotations

import pytest
from sloserve_operator.api.units import parse_duration

from .bench_modules import load_bench

POOL = ((200, 20), (800, 40), (3000, 10))


@pytest.fixture(scope="module")
def bench():
    module = load_bench("autoscale.py", "bench_autoscale")
    module.lengths = lambda *_: POOL  # no trace files needed: the lengths pool is not what is under test
    return module


def test_a_seed_fixes_the_scenarios_and_another_seed_draws_others(bench):
    first, again, other = (bench.random_scenarios(6, seed) for seed in (5, 5, 6))
    assert [s.name for s in first] == [s.name for s in again]
    assert [r.arrival for r in first[0].build()] == [r.arrival for r in again[0].build()]
    assert [s.about for s in first] != [s.about for s in other]


def test_random_scenarios_stay_in_the_named_ranges(bench):
    scenarios = bench.random_scenarios(12, 3)
    assert len({s.name for s in scenarios}) == 12
    for scenario in scenarios:
        kind = scenario.name.split("-", 3)[3]
        _, profile, ttft_range, itl_range, _ = bench.RANDOM_KINDS[kind]
        assert scenario.group == "random" and scenario.profile == profile
        assert ttft_range[0] - 0.05 <= parse_duration(scenario.ttft) <= ttft_range[1] + 0.05
        assert itl_range[0] - 5 <= parse_duration(scenario.itl) * 1000 <= itl_range[1] + 5
        requests = scenario.build()
        assert requests and requests[-1].arrival <= bench.D
        assert {(r.prompt_tokens, r.output_tokens) for r in requests} <= set(POOL)


def test_wide_draws_add_prefill_heavy_kinds_and_phase_less_traffic(bench):
    narrow, wide = bench.random_scenarios(30, 8), bench.random_scenarios(30, 8, wide=True)
    assert {s.name.split("-", 3)[2] for s in narrow} <= {"onoff", "day"}
    assert {s.name.split("-", 3)[3] for s in narrow} <= set(bench.RANDOM_KINDS)
    assert "segments" in {s.name.split("-", 3)[2] for s in wide}
    assert {s.name.split("-", 3)[3] for s in wide} & {"short-cpu", "short-h100"}
    for scenario in wide:
        _, profile, ttft_range, _, _ = bench.WIDE_KINDS[scenario.name.split("-", 3)[3]]
        assert scenario.profile == profile
        assert ttft_range[0] - 0.05 <= parse_duration(scenario.ttft) <= ttft_range[1] + 0.05
