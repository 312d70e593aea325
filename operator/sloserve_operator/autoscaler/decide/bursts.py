"""The burst memory and the burst floor: whether traffic is on/off (bursts ending abruptly within
HISTORY_SECONDS), how long the scale-down floor remembers a recent peak, and the fleet the next burst is
likely to need. Apart from policy.py because they read only the rate and recommendation histories.
"""

from __future__ import annotations

import math

# How far back the policy looks for bursts: which traffic is on/off, and the bursts the burst floor is fitted
# to. 900 until 2026-12-07 (eighth round): bursts or spikes 15-30 minutes apart then found the floor fitted to
# the last one only, or to none; 1800 met 99% in 4 more of 137 dev, held-out and fresh scenarios (1 fewer)
# for 0-3.5% more replica-hours (docs/autoscaling-history.md, "Eighth round").
HISTORY_SECONDS = 1800.0
# A burst is a recommendation of at least this share of the window's peak; the longest gap between bursts
# (plus a cold start) is how long the scale-down floor remembers the peak (see burst_memory).
BURST_SHARE = 0.5
IDLE_SHARE = 0.25  # a burst has ended when the rate falls below this share of the peak (see _bursts_ended)
RECURRING_BURSTS = 1  # abrupt burst ends within HISTORY_SECONDS that make traffic on/off (see burst_memory)
# The burst memory lasts at most this many stabilization windows (and HISTORY_SECONDS): a user who asks for a
# short window wants a fast scale-down; the default 5 m window gives 15 minutes.
BURST_MEMORY_WINDOWS = 3.0
# On on/off traffic, hold the BURST_QUANTILE_Z quantile of the recent bursts' peak needs (log-normal; 1.64:
# the 95th percentile, the quantile the budgets name), at most BURST_GROWTH_MAX times the largest (see
# burst_floor); 0 turns it off.
BURST_QUANTILE_Z = 1.64
BURST_GROWTH_MAX = 2.0


def _bursts_ended(rates: list[tuple[float, float]], window: float) -> int:
    """How many abrupt burst ends the rate history holds: the rate falling from at least BURST_SHARE of the
    history's peak to below IDLE_SHARE of it within two windows. A daily decline takes many windows to
    halve; an on/off burst or a spike ends within one."""
    peak = max((r for _, r in rates), default=0.0)
    if peak <= 0:
        return 0
    ends, idle = 0, False
    for index, (t, rate) in enumerate(rates):
        if rate >= IDLE_SHARE * peak:
            idle = False
        elif not idle and any(r >= BURST_SHARE * peak for u, r in rates[:index] if u >= t - 2 * window):
            ends, idle = ends + 1, True
    return ends


def on_off(rates: list[tuple[float, float]], now: float, rate_window: float) -> bool:
    """Whether the last HISTORY_SECONDS hold RECURRING_BURSTS bursts ending abruptly: on/off traffic, whose
    next burst may come as abruptly, faster than a cold start."""
    return _bursts_ended([(t, r) for t, r in rates if t >= now - HISTORY_SECONDS], rate_window) >= RECURRING_BURSTS


def burst_memory(recommendations: list[tuple[float, int]], on_off: bool, now: float, window: float,
                 cold_start: float) -> float:
    """How long the scale-down floor remembers the recent peak, learned from the traffic's own burstiness.
    Traffic that has shown RECURRING_BURSTS bursts ending abruptly (on/off traffic: the next one may come
    as abruptly, faster than a cold start) keeps the peak for up to BURST_MEMORY_WINDOWS stabilization
    windows (at most HISTORY_SECONDS); a lone spike does not. Otherwise the longest gap between bursts
    (recommendations of at least BURST_SHARE of the peak) seen in the history plus a cold start, so a quiet
    spell between two bursts does not leave the next one a cold start short. Flat or slowly moving traffic:
    the stabilization window alone."""
    recent = [(t, n) for t, n in recommendations if t >= now - HISTORY_SECONDS]
    peak = max((n for _, n in recent), default=0)
    if peak <= 1:
        return window
    longest_memory = max(min(HISTORY_SECONDS, BURST_MEMORY_WINDOWS * window), window)
    if on_off:
        return longest_memory
    bursts = [t for t, n in recent if n >= BURST_SHARE * peak]
    gaps = [b - a for a, b in zip(bursts, bursts[1:], strict=False)]
    longest = max(gaps, default=0.0)
    if longest <= window:
        return window
    return min(max(longest + cold_start, window), longest_memory)


def _burst_peaks(recommendations: list[tuple[float, int]]) -> list[int]:
    """The largest recommendation of each burst (consecutive recommendations of at least BURST_SHARE of
    the overall peak)."""
    top = max((n for _, n in recommendations), default=0)
    peaks: list[int] = []
    inside = False
    for _, n in recommendations:
        if top > 0 and n >= BURST_SHARE * top:
            if inside:
                peaks[-1] = max(peaks[-1], n)
            else:
                peaks.append(n)
            inside = True
        else:
            inside = False
    return peaks


def burst_floor(recommendations: list[tuple[float, int]], on_off: bool, now: float) -> int:
    """On on/off traffic, the fleet the next burst is likely to need: the BURST_QUANTILE_Z quantile of a
    log-normal fitted to the recent bursts' peak needs (two bursts or more), at most BURST_GROWTH_MAX times
    the largest seen. Burst sizes spread (one twice the last is common); a burst shorter than a cold start
    is served by what is up when it comes. 0 on traffic that has not shown bursts ending abruptly."""
    if BURST_QUANTILE_Z <= 0 or not on_off:
        return 0
    peaks = _burst_peaks([(t, n) for t, n in recommendations if t >= now - HISTORY_SECONDS])
    if len(peaks) < 2:
        return 0
    logs = [math.log(p) for p in peaks]
    mean = sum(logs) / len(logs)
    spread = math.sqrt(sum((x - mean) ** 2 for x in logs) / (len(logs) - 1))
    return min(math.ceil(math.exp(mean + BURST_QUANTILE_Z * spread)), math.ceil(BURST_GROWTH_MAX * max(peaks)))
