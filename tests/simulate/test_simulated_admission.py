"""The simulated replica refuses like the runtime, with the runtime's own gate (server/admission.py) on the
simulated clock: a burst beyond the TTFT limit is turned away, what is admitted meets the limit, refusals are
misses and demand in what the policy sees; an idle replica always admits; the estimate follows the TTFTs the
replica observed, running sequences included."""

from __future__ import annotations

import dataclasses

from autoscaler.helpers import fixture_profile
from sloserve_operator.autoscaler.decide.capacity import StepModel
from sloserve_operator.simulate.fleet import Fleet
from sloserve_operator.simulate.recorder import Recorder
from sloserve_operator.simulate.replica import ReplicaEngine
from sloserve_operator.simulate.traces import Request

CPU = fixture_profile()
# Decode that barely batches (this AVX2 host's measured step model): running sequences dominate a new TTFT.
SLOW_DECODE = dataclasses.replace(CPU, step=StepModel(0.038, 0.0026, 0.0175))


def steady(engine: ReplicaEngine, count: int, gap: float, prompt: int = 64, output: int = 64) -> list[bool]:
    """`count` requests `gap` seconds apart, the replica advanced to each arrival first (as the fleet does)."""
    admitted = []
    for i in range(count):
        engine.advance(i * gap)
        admitted.append(engine.submit(Request(i * gap, prompt, output), i * gap))
    return admitted


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


def test_an_idle_replica_admits_what_the_model_says_is_too_slow():
    recorder = Recorder(["default"], 400, 1.0, 1.0)
    engine = ReplicaEngine(CPU, "default", 1.0, recorder, admission_limit=0.1)
    huge = Request(0.0, 5000, 2)
    assert engine.expected_ttft(huge, 0.0) > 0.1  # the calibration alone says it cannot make the limit
    assert engine.submit(huge, 0.0)  # ... but waiting could not make it faster
    assert not engine.submit(Request(0.0, 5000, 2), 0.0)  # the second one waits behind the first: refused
    engine.advance(100.0)
    assert len(recorder.outcomes) == 1 and engine.outstanding == 0
    assert engine.submit(Request(100.0, 5000, 2), 100.0)  # idle again: admitted again


def test_the_estimate_follows_observed_ttfts_running_sequences_included():
    recorder = Recorder(["default"], 800, 1.0, 1.0)
    engine = ReplicaEngine(SLOW_DECODE, "default", 1.0, recorder, admission_limit=1000.0)  # observe, never refuse
    calibrated = engine.expected_ttft(Request(0.0, 64, 64), 0.0)
    assert all(steady(engine, 150, 2.0))
    engine.advance(800.0)
    observed = sorted(o.ttft for o in recorder.outcomes)[25:125]  # the middle of the steady state
    mean_observed = sum(observed) / len(observed)
    seconds_per_token, seconds_per_running = engine.gate.model.coefficients()
    assert seconds_per_running > 0  # learned: the running decoders slow a new prefill
    fitted = seconds_per_token * 64 + seconds_per_running * 3  # ~3 sequences run at this rate
    assert abs(fitted / mean_observed - 1) < 0.25
    assert abs(calibrated / mean_observed - 1) > 0.3  # the lone-prefill calibration alone was well off
    state = engine.gate.state()
    assert 0.8 < state["expected_sum"] / state["observed_sum"] < 1.25


def test_running_sequences_alone_can_refuse():
    """Nothing queued ahead, but the replica decodes a full batch: the old rule (queued prefill / rate, admit
    when nothing is queued) admitted this; the fitted model expects the running decoders to push the first
    token past the limit."""
    recorder = Recorder(["default"], 800, 1.0, 1.0)
    engine = ReplicaEngine(SLOW_DECODE, "default", 1.0, recorder, admission_limit=0.4)
    admitted = steady(engine, 60, 0.6, output=128)
    assert not all(admitted)
    engine.advance(40.0)
    assert engine.queued_prefill_tokens == 0 and engine.running >= 4
    assert engine.expected_ttft(Request(40.0, 64, 64), 40.0) > 0.4
    assert not engine.submit(Request(40.0, 64, 64), 40.0)
    engine.advance(800.0)
    served = [o.ttft for o in recorder.outcomes]
    assert len(served) == sum(admitted)  # nothing admitted is lost


def test_a_refused_request_is_tried_on_the_other_serving_pods_before_it_counts_as_refused():
    """As local mode's router retries a 429 on another replica: a pod whose gate refuses passes the request on,
    and only a request every serving pod refuses is recorded as refused."""
    recorder = Recorder(["default"], 400, 1.0, 1.0)
    fleet = Fleet(CPU, ["default"], recorder, 1.0, admission_limit=1.0)
    fleet.start_ready("default", 2, 0, 0.0)
    busy, idle = fleet.pods
    for _ in range(200):  # a backlog on one pod only: its gate refuses from here on
        busy.engine.submit(Request(0.0, 500, 4), 0.0)
    idle_before = idle.engine.outstanding
    refused_before = recorder.refused_count()
    assert busy.engine.expected_ttft(Request(0.0, 500, 4), 0.0) > 1.0
    # Steer the router to the busy pod first while it is a candidate (left alone it would pick the idle one).
    fleet.router.choose = lambda candidates, route: next(
        (i for i, c in enumerate(candidates) if c.key == busy.ident), 0)
    fleet.dispatch(Request(0.0, 500, 4), 0.0)
    assert idle.engine.outstanding == idle_before + 1  # the idle pod took it
    assert recorder.refused_count() == refused_before  # not a refusal: a retry found room
    for _ in range(200):  # now both pods are backlogged: refused, once each
        fleet.dispatch(Request(0.0, 500, 4), 0.0)
    assert recorder.refused_count() > refused_before
    assert recorder.refused_count() - refused_before <= 200
