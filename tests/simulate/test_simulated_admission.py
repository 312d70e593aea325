"""The simulated replica refuses like the runtime (server/admission.py): a burst beyond the TTFT limit is
turned away, what is admitted meets the limit, refusals are misses and demand in what the policy sees."""

from __future__ import annotations

from autoscaler.helpers import fixture_profile
from sloserve_operator.simulate.recorder import Recorder
from sloserve_operator.simulate.replica import ReplicaEngine
from sloserve_operator.simulate.traces import Request

CPU = fixture_profile()


def test_a_burst_beyond_the_limit_is_refused_and_the_admitted_meet_it():
    recorder = Recorder(["default"], 400, 1.0, 1.0)
    engine = ReplicaEngine(CPU, "default", 1.0, recorder, admission_limit=1.0)
    burst = [Request(0.0, 500, 4) for _ in range(200)]
    admitted = [engine.submit(request, 0.0) for request in burst]
    assert admitted[0] and not all(admitted)
    engine.advance(300.0)
    assert len(recorder.outcomes) == sum(admitted)  # nothing admitted is lost
    assert max(o.ttft for o in recorder.outcomes) <= 1.0 * 1.2  # the limit, give or take the rate model
    refused = len(burst) - sum(admitted)
    assert recorder.refused_count() == refused
    assert recorder.fraction_within_both(len(burst)) <= sum(admitted) / len(burst)  # refusals are misses
    seen = recorder.observe("default", 60.0, 60.0, ready_replicas=1, running=0.0, waiting=0.0)
    assert seen.refused_rate * 60 == refused and seen.request_rate == 0.0  # arrivals are the fleet's to record
    assert seen.ttft_within_budget <= sum(admitted) / len(burst) + 1e-9
    # Capacity is back (the queue drained): admitted again.
    assert engine.submit(Request(300.0, 500, 4), 300.0)
