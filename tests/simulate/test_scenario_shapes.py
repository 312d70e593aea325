"""The synthetic shapes and length pools bench/autoscale.py builds scenarios from: they must have the
statistics their names promise, or a scenario tests something other than what its description says."""

from __future__ import annotations

import statistics

from sloserve_operator.simulate import scenarios
from sloserve_operator.simulate.traces import per_minute_rates


def _quantile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def test_lognormal_lengths_have_the_mean_and_p95_asked_for():
    pool = scenarios.lognormal_lengths(2000, 7300, 28, 100, count=40000, seed=3)
    prompts, outputs = [p for p, _ in pool], [o for _, o in pool]
    assert abs(statistics.fmean(prompts) / 2000 - 1) < 0.05
    assert abs(_quantile(prompts, 0.95) / 7300 - 1) < 0.05
    assert abs(statistics.fmean(outputs) / 28 - 1) < 0.05
    assert abs(_quantile(outputs, 0.95) / 100 - 1) < 0.08
    assert min(outputs) >= 1 and min(prompts) >= 1


def test_lognormal_lengths_respect_the_model_length():
    pool = scenarios.lognormal_lengths(3000, 20000, 300, 2000, count=5000, max_len=8192, seed=1)
    assert max(p + o for p, o in pool) <= 8192
    assert min(o for _, o in pool) >= 1


def test_random_segments_go_idle_and_peak_without_a_pattern():
    requests = scenarios.random_segments(2400.0, 10.0, ((100, 10),), spread=0.8, idle_share=0.25, seed=9)
    rates = per_minute_rates(requests)
    assert 0.6 < statistics.fmean(rates) / 10.0 < 1.1  # a quarter idle, the rest log-normal around 10/s
    assert sum(r == 0 for r in rates) >= 2  # whole idle minutes (segments are 20-90 s)
    assert scenarios.peak_to_mean(requests) > 2.5
    again = scenarios.random_segments(2400.0, 10.0, ((100, 10),), spread=0.8, idle_share=0.25, seed=9)
    assert [r.arrival for r in again] == [r.arrival for r in requests]


def test_spiky_minutes_have_idle_minutes_and_spikes_shorter_than_a_window():
    requests = scenarios.spiky_minutes(2400.0, 10.0, ((100, 10),), idle_share=0.2, spikes=2,
                                       spike_seconds=(10.0, 25.0), spike_factor=(9.0, 14.0), seed=4)
    rates = per_minute_rates(requests)
    assert sum(r == 0 for r in rates) == 8  # a fifth of 40 minutes, wholly idle
    assert all(r > 0 for r in rates[:2])  # the opening fleet has something to carry
    # Each spike shows in 10 s bins at >= 9x the mean rate on top of its minute; a 60 s window sees a fraction.
    bins = [0] * 240
    for request in requests:
        bins[int(request.arrival // 10)] += 1
    spiky_bins = [index for index, count in enumerate(bins) if count / 10.0 >= 9.0 * 10.0 * 0.8]
    assert 2 <= len(spiky_bins) <= 6  # two spikes of 10-25 s each
    assert max(rates) < max(bins) / 10.0  # no whole minute reaches the spikes' rate
    again = scenarios.spiky_minutes(2400.0, 10.0, ((100, 10),), idle_share=0.2, spikes=2, seed=4)
    assert [r.arrival for r in again] == [r.arrival for r in requests]
