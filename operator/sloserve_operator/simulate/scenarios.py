"""Synthetic load shapes the shared traces lack, with fixed seeds: on/off bursts, a lone spike, a compressed day.

The shared traces are flat (per-minute peak/mean 1.2-1.5); autoscaling exists for traffic that is not. Each
generator here draws Poisson arrivals from a rate that is a function of time (by thinning) and request
lengths from a pool of real (prompt, output) pairs, so bursts carry real heavy-tailed prompts:

- mmpp_bursty: a two-state Markov-modulated Poisson process, idle periods (a trickle or nothing) and bursts
  whose rates vary from burst to burst;
- single_spike: a steady base with one short spike of `factor` times it;
- compressed_day: a daily cycle (night trough, morning and evening peaks) squeezed into `duration`;
- random_segments: no phases at all, a rate drawn afresh (log-normal, some segments idle) every 20-90 s,
  so single minutes reach several times the mean with no warning and no recurring pattern;
- spiky_minutes: the shape issue 13's held-out production hour was described with, a minute-by-minute
  log-normal rate, some minutes idle, and a few spikes of 10-25 s at ~10x the mean rate inside single
  minutes (shorter than a cold start and than the 60 s window the policy observes through).

`lognormal_lengths` makes a length pool from summary figures (mean and p95 of prompts and outputs) where no
real trace of that kind is at hand, e.g. prefill-heavy traffic with long prompts and outputs of a few tokens.

`peak_to_mean` is the burstiness figure the issue's targets use (per-minute peak over per-minute mean).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from sloserve_operator.simulate.traces import Request, per_minute_rates

Lengths = Sequence[tuple[int, int]]  # (prompt tokens, output tokens) pairs to draw from


def length_pool(requests: list[Request]) -> list[tuple[int, int]]:
    """The (prompt, output) pairs of a real trace, to give synthetic arrivals real lengths."""
    return [(r.prompt_tokens, r.output_tokens) for r in requests]


def _lognormal_sigma(mean: float, p95: float) -> float:
    """The sigma of a log-normal with this mean and 95th percentile: p95 / mean = exp(1.645 s - s^2 / 2)."""
    ratio = math.log(max(p95 / mean, 1.0 + 1e-9))
    if ratio >= 1.645 ** 2 / 2:  # the largest ratio a log-normal reaches (at s = 1.645)
        return 1.645
    return 1.645 - math.sqrt(1.645 ** 2 - 2 * ratio)


def lognormal_lengths(mean_prompt: float, p95_prompt: float, mean_output: float, p95_output: float, *,
                      count: int = 20000, max_len: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """`count` (prompt, output) pairs, each length log-normal with the given mean and 95th percentile, at
    least one token, prompt + output within `max_len`. A stand-in for a kind of traffic no shared trace has."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        lengths = []
        for mean, p95 in ((mean_prompt, p95_prompt), (mean_output, p95_output)):
            sigma = _lognormal_sigma(mean, p95)
            lengths.append(max(1, round(rng.lognormvariate(math.log(mean) - sigma ** 2 / 2, sigma))))
        prompt, output = lengths
        if max_len is not None:
            output = min(output, max(1, max_len // 2))
            prompt = min(prompt, max_len - output)
        pairs.append((prompt, output))
    return pairs


def poisson_arrivals(rate_at: Callable[[float], float], peak: float, duration: float, lengths: Lengths,
                     rng: random.Random) -> list[Request]:
    """Arrivals of an inhomogeneous Poisson process with rate `rate_at(t) <= peak`, by thinning."""
    if peak <= 0:
        return []
    out, t = [], 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            return out
        if rng.random() * peak < rate_at(t):
            prompt, output = lengths[rng.randrange(len(lengths))]
            out.append(Request(t, prompt, output))


def mmpp_bursty(duration: float, burst_rate: float, lengths: Lengths, *, idle_rate: float = 0.0,
                idle_minutes: tuple[float, float] = (1.0, 5.0), burst_minutes: tuple[float, float] = (1.0, 3.0),
                burst_spread: float = 0.5, seed: int = 0) -> list[Request]:
    """On/off traffic: idle periods of uniform(*idle_minutes) at `idle_rate`, then bursts of
    uniform(*burst_minutes) whose rate is log-normal around `burst_rate` (sigma `burst_spread`), in turn.
    Starts with a burst, so the opening fleet has something to carry."""
    rng = random.Random(seed)
    phases: list[tuple[float, float, float]] = []  # (start, end, rate)
    t, on = 0.0, True
    while t < duration:
        low, high = burst_minutes if on else idle_minutes
        length = rng.uniform(low, high) * 60.0
        rate = burst_rate * math.exp(rng.gauss(-burst_spread ** 2 / 2, burst_spread)) if on else idle_rate
        phases.append((t, t + length, rate))
        t, on = t + length, not on
    peak = max(rate for _, _, rate in phases)

    def rate_at(time: float) -> float:
        for start, end, rate in phases:
            if start <= time < end:
                return rate
        return 0.0

    return poisson_arrivals(rate_at, peak, duration, lengths, rng)


def single_spike(duration: float, base_rate: float, lengths: Lengths, *, factor: float = 10.0,
                 at: float = 1200.0, length: float = 90.0, ramp: float = 10.0, seed: int = 0) -> list[Request]:
    """Steady `base_rate` with one spike to `factor` x base for `length` seconds from `at` (linear ramps of
    `ramp` seconds at both ends)."""
    rng = random.Random(seed)

    def rate_at(time: float) -> float:
        if time < at or time >= at + length:
            return base_rate
        edge = min(time - at, at + length - time, ramp) / ramp if ramp > 0 else 1.0
        return base_rate * (1.0 + (factor - 1.0) * edge)

    return poisson_arrivals(rate_at, base_rate * factor, duration, lengths, rng)


def compressed_day(duration: float, low_rate: float, high_rate: float, lengths: Lengths, *,
                   peaks: tuple[tuple[float, float, float], ...] = ((9.5, 0.7, 2.0), (20.0, 1.0, 2.5)),
                   seed: int = 0) -> list[Request]:
    """A day squeezed into `duration`: `low_rate` at night plus Gaussian humps (hour of day, height as a
    share of high - low, width in hours); the default is a morning peak and a higher evening one."""
    rng = random.Random(seed)

    def shape(time: float) -> float:
        hour = 24.0 * time / duration
        return min(1.0, sum(h * math.exp(-0.5 * ((hour - c) / w) ** 2) for c, h, w in peaks))

    def rate_at(time: float) -> float:
        return low_rate + (high_rate - low_rate) * shape(time)

    return poisson_arrivals(rate_at, high_rate, duration, lengths, rng)


def random_segments(duration: float, mean_rate: float, lengths: Lengths, *, spread: float = 0.8,
                    idle_share: float = 0.2, segment_seconds: tuple[float, float] = (20.0, 90.0),
                    seed: int = 0) -> list[Request]:
    """Traffic with no phases to learn: every uniform(*segment_seconds) a new rate, idle with probability
    `idle_share`, else log-normal around `mean_rate` (sigma `spread`, mean preserved). Segments do not line
    up with minutes, so neither a per-minute plan nor a 60 s window sees a change whole."""
    rng = random.Random(seed)
    segments: list[tuple[float, float]] = []  # (end, rate)
    t = 0.0
    while t < duration:
        t += rng.uniform(*segment_seconds)
        idle = rng.random() < idle_share
        segments.append((t, 0.0 if idle else mean_rate * math.exp(rng.gauss(-spread ** 2 / 2, spread))))
    peak = max(rate for _, rate in segments)

    def rate_at(time: float) -> float:
        return next((rate for end, rate in segments if time < end), 0.0)

    return poisson_arrivals(rate_at, peak, duration, lengths, rng)


def spiky_minutes(duration: float, mean_rate: float, lengths: Lengths, *, spread: float = 0.55,
                  idle_share: float = 0.2, spikes: int = 2, spike_seconds: tuple[float, float] = (10.0, 25.0),
                  spike_factor: tuple[float, float] = (9.0, 14.0), seed: int = 0) -> list[Request]:
    """A rate drawn afresh each minute (log-normal around `mean_rate`, sigma `spread`, mean preserved), a
    share `idle_share` of the minutes idle (none of the first two), and `spikes` sub-minute spikes: for
    uniform(*spike_seconds) inside a busy minute, uniform(*spike_factor) x `mean_rate` on top of that
    minute's rate. A 60 s window shows a spike at a sixth to two fifths of its rate, and it is over long before
    a pod started for it is ready: only the fleet that is up when it comes serves it."""
    rng = random.Random(seed)
    minutes = max(math.ceil(duration / 60.0), 1)
    idle = set(rng.sample(range(2, minutes), min(round(idle_share * minutes), max(minutes - 2, 0))))
    busy = [m for m in range(minutes) if m not in idle]
    rates = [0.0 if m in idle else mean_rate * math.exp(rng.gauss(-spread ** 2 / 2, spread))
             for m in range(minutes)]
    bursts: list[tuple[float, float, float]] = []  # (start, end, extra rate)
    for minute in rng.sample(busy, min(spikes, len(busy))):
        length = rng.uniform(*spike_seconds)
        start = minute * 60.0 + rng.uniform(0.0, max(60.0 - length, 0.0))
        bursts.append((start, start + length, mean_rate * rng.uniform(*spike_factor)))
    peak = max(rates) + max((extra for _, _, extra in bursts), default=0.0)

    def rate_at(time: float) -> float:
        base = rates[min(int(time // 60.0), minutes - 1)]
        return base + sum(extra for start, end, extra in bursts if start <= time < end)

    return poisson_arrivals(rate_at, peak, duration, lengths, rng)


def peak_to_mean(requests: list[Request]) -> float:
    """Per-minute peak rate over the per-minute mean rate (1 for flat traffic)."""
    rates = per_minute_rates(requests)
    mean = sum(rates) / len(rates) if rates else 0.0
    return max(rates) / mean if mean > 0 else 0.0
