"""AdmissionGate on a fake clock: expected TTFT from the measured prefill rate, nothing-ahead always admitted."""

from __future__ import annotations

import pytest
from sloserve_runtime.server.admission import AdmissionGate


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_rate_is_measured_and_the_limit_refuses_only_with_work_ahead():
    clock = Clock()
    gate = AdmissionGate(limit_seconds=1.0, clock=clock)
    assert gate.over_limit(10_000) is None  # no rate, nothing ahead: admit
    gate.calibrate(1000.0)
    assert gate.prefill_rate == pytest.approx(1000.0)
    gate.admit("a", 400)
    clock.now = 0.4
    gate.first_token("a")  # 400 tokens in 0.4 s: still 1000 tok/s
    assert gate.prefill_rate == pytest.approx(1000.0, rel=0.05)
    assert gate.over_limit(5000) is None  # nothing ahead: admitted whatever its size
    gate.admit("b", 600)
    assert gate.over_limit(300) is None  # (600 + 300) / 1000 = 0.9 s
    assert gate.over_limit(500) == pytest.approx(1.1, rel=0.05)
    gate.release("b")  # aborted before its first token: its work leaves the ledger
    assert gate.pending_tokens == 0 and gate.pending_requests == 0


def test_a_stuck_replica_looks_slower_at_once_and_leaked_entries_expire():
    clock = Clock()
    gate = AdmissionGate(limit_seconds=1.0, expire_seconds=30.0, clock=clock)
    gate.calibrate(1000.0)
    gate.admit("a", 100)
    assert gate.over_limit(100) is None
    clock.now = 5.0  # no first token for 5 s: the rate falls without waiting for one
    assert gate.over_limit(100) is not None
    clock.now = 40.0
    assert gate.over_limit(100) is None  # "a" expired (its client left before it started)
    assert gate.pending_requests == 0
