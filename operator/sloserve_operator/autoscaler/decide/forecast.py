"""Demand forecast over the cold-start horizon.

New replicas take minutes to load weights, so the policy sizes for the rate expected when they would be
ready, not for the rate now. Holt's linear smoothing (an EWMA of the rate and an EWMA of its trend, both
with time constants so irregular sampling is fine) is extrapolated over the horizon: it follows a ramp
within a minute or two where a least-squares line over five minutes lags it, and a single noisy sample
moves the trend only a little. Only upwards (a falling trend never removes capacity early: scale-down has
its own stabilization), and capped so a noisy start cannot ask for an absurd fleet.
"""

from __future__ import annotations

import math

LEVEL_SECONDS = 30.0  # time constant of the rate's EWMA
TREND_SECONDS = 60.0  # time constant of the trend's EWMA (120 s lagged the wave's ramps)
MIN_TREND_SPAN = 60.0  # seconds of history before any trend is trusted
# Forecast at most this multiple of the current rate. Without a forecast (1.0) the shared wave fell to 98.97%.
# 1.25 (2026-12-06) left the sharp daily Mooncake ramps a cold start short once the length estimate stopped
# inflating every fleet; 1.5 costs 2-3% of replica-hours and holds them (2026-12-07,
# docs/autoscaling-history.md, "Fourth round").
MAX_GROWTH = 1.5


def holt(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """(level, trend per second) of (time, rate) samples in time order, by Holt's linear smoothing."""
    level, trend = samples[0][1], 0.0
    for (t0, _), (t1, rate) in zip(samples, samples[1:], strict=False):
        dt = t1 - t0
        if dt <= 0:
            continue
        predicted = level + trend * dt
        alpha = 1.0 - math.exp(-dt / LEVEL_SECONDS)
        beta = 1.0 - math.exp(-dt / TREND_SECONDS)
        new_level = predicted + alpha * (rate - predicted)
        trend += beta * ((new_level - level) / dt - trend)
        level = new_level
    return level, trend


def trend_slope(samples: list[tuple[float, float]], now: float) -> float:
    """Smoothed trend (rate per second) of the samples up to `now`; 0 until MIN_TREND_SPAN of history."""
    recent = [(t, r) for t, r in samples if t <= now]
    if len(recent) < 3 or recent[-1][0] - recent[0][0] < MIN_TREND_SPAN:
        return 0.0
    return holt(recent)[1]


def forecast_rate(samples: list[tuple[float, float]], now: float, horizon: float) -> float:
    """The rate to provision for: max(now, smoothed trend extrapolated `horizon` seconds ahead), capped."""
    if not samples:
        return 0.0
    current = samples[-1][1]
    slope = trend_slope(samples, now)
    if slope <= 0:
        return current
    return min(current + slope * horizon, max(current, 1e-9) * MAX_GROWTH)
