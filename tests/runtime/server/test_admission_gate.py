"""AdmissionGate and its TTFT model on a fake clock: the fit follows observed TTFTs (prefill tokens and the
running sequences beside them), an idle replica always admits, leaked entries expire."""

from __future__ import annotations

import pytest
from sloserve_runtime.server.admission import AdmissionGate, TtftModel


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def serve(gate: AdmissionGate, clock: Clock, request_id: str, tokens: int, running: int, seconds: float) -> None:
    """Admit a request and give it its first token `seconds` later."""
    gate.admit(request_id, tokens, running)
    clock.now += seconds
    gate.first_token(request_id)


def test_the_model_recovers_both_coefficients_from_observations():
    model = TtftModel()
    model.calibrate(256, 256 * 0.002)
    for tokens, running in [(64, 0), (64, 8), (128, 4), (64, 16), (192, 2), (64, 12)] * 3:
        model.observe(tokens, running, 0.002 * tokens + 0.15 * running)
    a, b = model.coefficients()
    assert a == pytest.approx(0.002, rel=0.02) and b == pytest.approx(0.15, rel=0.02)


def test_decode_interference_shows_in_the_estimate_where_the_prefill_rate_alone_missed_it():
    """Observed on the quickstart: a 64-token prefill takes ~0.1 s alone but seconds beside running decodes.
    The old estimate (tokens over a prefill rate) would admit a lone 64-token request next to 16 decodes."""
    clock = Clock()
    gate = AdmissionGate(limit_seconds=1.0, clock=clock)
    gate.calibrate(640.0, tokens=256)  # 0.1 s per 64 tokens alone
    assert gate.over_limit(64, running=16) is None  # nothing observed with decodes yet: b starts at ~0
    for index in range(12):
        serve(gate, clock, f"r{index}", 64, running=index % 2 * 16, seconds=0.1 + index % 2 * 16 * 0.2)
    expected = gate.over_limit(64, running=16)
    assert expected == pytest.approx(0.1 + 3.2, rel=0.1)  # refused: nothing ahead but 16 running
    assert gate.over_limit(64, running=2) is None  # ~0.5 s: admitted
    assert gate.state()["observed_sum"] > 0 and gate.state()["expected_sum"] > 0


def test_the_model_adapts_when_the_replica_gets_slower():
    clock = Clock()
    gate = AdmissionGate(limit_seconds=1.0, clock=clock)
    gate.calibrate(1000.0)
    for index in range(5):
        serve(gate, clock, f"fast{index}", 100, running=4, seconds=0.1 + 4 * 0.01)
    assert gate.over_limit(100, running=4) is None
    for index in range(20):  # the machine got busy: everything takes 10x as long
        serve(gate, clock, f"slow{index}", 100, running=4, seconds=10 * (0.1 + 4 * 0.01))
    assert gate.over_limit(100, running=4) == pytest.approx(1.4, rel=0.2)


def test_work_ahead_counts_and_an_idle_replica_always_admits():
    clock = Clock()
    gate = AdmissionGate(limit_seconds=1.0, clock=clock)
    assert gate.over_limit(10_000, running=3) is None  # nothing measured: admit
    gate.calibrate(1000.0)
    assert gate.prefill_rate == pytest.approx(1000.0)
    assert gate.over_limit(5000) is None  # idle replica: admitted whatever its size
    assert gate.over_limit(5000, running=1) == pytest.approx(5.0, rel=0.05)
    gate.admit("b", 600)
    assert gate.over_limit(300) is None  # (600 + 300) / 1000 = 0.9 s
    assert gate.over_limit(500) == pytest.approx(1.1, rel=0.05)
    gate.release("b")  # aborted before its first token: its work leaves the ledger, unmeasured
    assert gate.pending_tokens == 0 and gate.pending_requests == 0 and gate.model.observations == 0


def test_a_stuck_replica_looks_slower_at_once_and_leaked_entries_expire():
    clock = Clock()
    gate = AdmissionGate(limit_seconds=1.0, expire_seconds=30.0, clock=clock)
    gate.calibrate(1000.0)
    gate.admit("a", 100)
    assert gate.over_limit(100) is None
    clock.now = 5.0  # no first token for 5 s: it looks that slow without waiting for one
    assert gate.over_limit(100) == pytest.approx(5.0)
    clock.now = 40.0
    assert gate.over_limit(100) is None  # "a" expired (its client left before it started)
    assert gate.pending_requests == 0
