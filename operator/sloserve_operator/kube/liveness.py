"""What the operator's /healthz reports: when reconciles and autoscale ticks last succeeded, and whether a
handler has been stuck for longer than any healthy call can take.

kopf's health endpoint answers 200 as long as its event loop runs, which says nothing about the worker
threads our sync handlers run in: a Kubernetes call that never returns (before request timeouts were set)
held the per-object lock forever while /healthz stayed green. A probe that raises makes kopf answer 500, so
the kubelet restarts a wedged operator; a standby replica (paused by peering) runs no handlers and stays
healthy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class Wedged(RuntimeError):
    """A handler has been running longer than `wedged_after` seconds."""


class HandlerClock:
    """Start and success times of the handlers, by kind of work (reconcile, autoscale)."""

    def __init__(self, wedged_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.wedged_after = wedged_after
        self._clock = clock
        self._lock = threading.Lock()
        self._last_success: dict[str, float] = {}
        self._running: dict[int, tuple[str, float]] = {}  # token -> (kind, started)
        self._tokens = iter(range(1, 1 << 62))

    @contextmanager
    def running(self, kind: str) -> Iterator[None]:
        """Time one handler call; it counts as a success only if it returns without raising."""
        with self._lock:
            token = next(self._tokens)
            self._running[token] = (kind, self._clock())
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(token, None)
        with self._lock:
            self._last_success[kind] = self._clock()

    def report(self) -> dict[str, Any]:
        """Seconds since each kind last succeeded (None: not yet) and the longest call now running."""
        now = self._clock()
        with self._lock:
            ages = {kind: round(now - when, 1) for kind, when in self._last_success.items()}
            longest: dict[str, float] = {}
            for kind, started in self._running.values():
                longest[kind] = max(longest.get(kind, 0.0), round(now - started, 1))
        return {
            "lastReconcileAgeSeconds": ages.get("reconcile"),
            "lastAutoscaleAgeSeconds": ages.get("autoscale"),
            "runningForSeconds": longest,
        }

    def check(self) -> dict[str, Any]:
        """The report, or Wedged when a call has been running longer than `wedged_after`."""
        report = self.report()
        stuck = {kind: age for kind, age in report["runningForSeconds"].items() if age > self.wedged_after}
        if stuck:
            detail = ", ".join(f"{kind} for {age:.0f}s" for kind, age in sorted(stuck.items()))
            raise Wedged(f"handlers stuck longer than {self.wedged_after:.0f}s: {detail}")
        return report
