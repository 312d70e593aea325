"""Demand forecast over the cold-start horizon.

New replicas take minutes to load weights, so the policy sizes for the rate expected when they would be
ready, not for the rate now. A least-squares trend over the last few minutes is extrapolated, only upwards
(a falling trend never removes capacity early: scale-down has its own stabilization), and capped so one
noisy sample cannot ask for an absurd fleet.
"""

from __future__ import annotations

TREND_SECONDS = 300.0
MAX_GROWTH = 1.5  # forecast at most this multiple of the current rate


def trend_slope(samples: list[tuple[float, float]], now: float, span: float = TREND_SECONDS) -> float:
    """Least-squares slope (rate per second) of (time, rate) samples within `span` seconds of `now`."""
    recent = [(t, r) for t, r in samples if now - span <= t <= now]
    if len(recent) < 3:
        return 0.0
    mean_t = sum(t for t, _ in recent) / len(recent)
    mean_r = sum(r for _, r in recent) / len(recent)
    spread = sum((t - mean_t) ** 2 for t, _ in recent)
    if spread <= 0:
        return 0.0
    return sum((t - mean_t) * (r - mean_r) for t, r in recent) / spread


def forecast_rate(samples: list[tuple[float, float]], now: float, horizon: float) -> float:
    """The rate to provision for: max(now, trend extrapolated `horizon` seconds ahead), capped."""
    if not samples:
        return 0.0
    current = samples[-1][1]
    slope = trend_slope(samples, now)
    if slope <= 0:
        return current
    return min(current + slope * horizon, max(current, 1e-9) * MAX_GROWTH)
