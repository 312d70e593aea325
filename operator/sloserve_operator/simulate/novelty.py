"""Misses no reactive policy could have provisioned for: requests that arrived in a burst larger than anything
the recent past showed.

A pod asked for when a burst is seen serves a cold start later, so a policy without foresight serves a
burst at once only with pods it already holds, and it holds them only for loads it has seen: the memory of
a recent peak. A miss that arrived in a burst (the busiest window around it) clearly above every trailing-window
rate of the `memory` seconds before (up to a cold start ago: what came later could not have been acted on
in time) fell in an unprecedented burst. When most of a policy's misses are of that kind, serving them
needs foresight, or a fleet held above every recent peak all the time; the rest are the policy's own
(including a burst's backlog still draining more than a window after the burst: a conservative split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _trailing_rates(times: np.ndarray, at: np.ndarray | float, window: float) -> np.ndarray:
    """Arrivals per second over the `window` seconds up to each of `at`."""
    return (np.searchsorted(times, at, side="right") - np.searchsorted(times, np.subtract(at, window),
                                                                        side="right")) / window


def unprecedented_shares(arrivals: Sequence[float], missed: Sequence[float], margins: Sequence[float], *,
                         window: float = 60.0, memory: float = 900.0, lead: float = 120.0,
                         step: float = 5.0) -> dict[float, float]:
    """For each margin, the share of `missed` arrival times t whose burst (the busiest `window` containing t)
    exceeded every trailing `window` rate over [t - memory, t - lead] (sampled every `step` s) by more than
    the margin (a burst of the same size as an earlier one reads a few percent above it half the time:
    Poisson noise). A burst's first seconds count with the burst: the fleet misses them for the same
    reason. `arrivals` are all arrival times, sorted. Empty when nothing missed."""
    if not missed:
        return {}
    times = np.asarray(arrivals, dtype=float)
    grid = np.arange(0.0, max(missed[-1], times[-1] if len(times) else 0.0) + window + step, step)
    rates = _trailing_rates(times, grid, window)
    novel = dict.fromkeys(margins, 0)
    for t in missed:
        first, last = max(math.ceil((t - memory) / step), 0), math.floor((t - lead) / step)
        past = float(rates[first:last + 1].max()) if last >= first else 0.0
        burst = max(float(_trailing_rates(times, t + window, window)),
                    float(rates[math.ceil(t / step):math.floor((t + window) / step) + 1].max(initial=0.0)))
        for margin in margins:
            novel[margin] += burst > past * (1.0 + margin)
    return {margin: count / len(missed) for margin, count in novel.items()}
