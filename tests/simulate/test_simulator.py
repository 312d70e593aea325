"""The simulator's parts: replica physics, fleet lifecycle, recorder statistics, trace loaders, a full run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from autoscaler.helpers import fixture_profile, make_spec
from sloserve_operator.api.labels import SERVING, WARM
from sloserve_operator.autoscaler.decide.capacity import load_shipped
from sloserve_operator.autoscaler.observe.sources import histogram_quantile
from sloserve_operator.routing import Router
from sloserve_operator.simulate import trace_files, traces
from sloserve_operator.simulate.autoscalers import (
    KedaHpa,
    KnativeKpa,
    LlmdSloRatio,
    SloservePolicy,
    StaticPeak,
)
from sloserve_operator.simulate.fleet import Fleet
from sloserve_operator.simulate.recorder import Recorder, cumulative_buckets, observed_spread
from sloserve_operator.simulate.replica import ReplicaEngine
from sloserve_operator.simulate.run import into_regions, simulate, with_preroll
from sloserve_operator.simulate.traces import Request

H100 = load_shipped("llama-8b-h100")
CPU = fixture_profile()
SHARED = Path("/work/shared/traces")


def run_engine(profile, requests, until=1000.0, itl_budget=1.0):
    recorder = Recorder(["default"], until + 10, 1.0, itl_budget)
    engine = ReplicaEngine(profile, "default", itl_budget, recorder)
    for request in requests:
        engine.submit(request, request.arrival)
    engine.advance(until)
    return recorder, engine


def test_the_observation_carries_the_prompts_spread_from_the_runtime_buckets():
    """The policy sees the spread a real fleet's prompt-length histogram would give, not the exact one."""
    prompts = [100, 100, 100, 1000, 3000]
    recorder, _ = run_engine(H100, [Request(i * 20.0, length, 5) for i, length in enumerate(prompts)], until=200.0)
    seen = recorder.observe("default", 200.0, 200.0, ready_replicas=1, running=0, waiting=0)
    assert seen.mean_prompt_tokens == pytest.approx(sum(prompts) / len(prompts))
    assert seen.prompt_tokens_spread == pytest.approx(observed_spread(prompts))
    mean = sum(prompts) / len(prompts)
    exact = sum((p - mean) ** 2 for p in prompts) / len(prompts) / mean**2
    assert seen.prompt_tokens_spread == pytest.approx(exact, rel=0.2)  # five prompts, each spread over its bucket
    assert recorder.observe("default", 10.0, 5.0, ready_replicas=1, running=0, waiting=0).prompt_tokens_spread is None
    # The p95 from the same buckets: the 3,000-token prompt's bucket (2896, 4096], as histogram_quantile reads it.
    assert 2896 < seen.prompt_tokens_p95 <= 4096
    assert recorder.observe("default", 10.0, 5.0, ready_replicas=1, running=0, waiting=0).prompt_tokens_p95 is None


def test_lone_request_latency_is_the_step_model():
    step = H100.step
    recorder, _ = run_engine(H100, [Request(0.0, 1000, 50)])
    (outcome,) = recorder.outcomes
    ttft = 2 * step.base_seconds + 1000 * step.per_prefill_token_seconds  # two chunks: 512 + 488
    assert outcome.ttft == pytest.approx(ttft)
    decode = step.base_seconds + step.per_decode_seq_seconds
    assert outcome.finished_at == pytest.approx(ttft + 49 * decode)
    assert (outcome.gaps, outcome.slow_gaps) == (49, 0)


def with_attention(profile, per_attended):
    return dataclasses.replace(profile, step=dataclasses.replace(profile.step, per_attended_token_seconds=per_attended))


def test_attention_makes_later_chunks_and_longer_contexts_slower():
    c = 1e-7
    profile = with_attention(H100, c)
    step = profile.step
    recorder, _ = run_engine(profile, [Request(0.0, 1000, 50)])
    (outcome,) = recorder.outcomes
    # Chunks 512 + 488; token p attends to p + 1 tokens.
    attended = sum(p + 1 for p in range(1000))
    ttft = 2 * step.base_seconds + 1000 * step.per_prefill_token_seconds + c * attended
    assert outcome.ttft == pytest.approx(ttft)
    # The j-th decode step attends to the prompt plus the j tokens generated before it.
    decode = sum(step.base_seconds + step.per_decode_seq_seconds + c * (1000 + j) for j in range(49))
    assert outcome.finished_at == pytest.approx(ttft + decode, rel=1e-6)


def test_decode_steps_that_outgrow_the_itl_budget_are_counted_slow():
    c = 2e-6
    profile = with_attention(H100, c)
    first = profile.step.seconds(0, 1, 1000)  # the first decode step of a 1000-token prompt
    budget = first + c * 100.5  # steps 0..100 are within, the rest of the 300 gaps are over
    recorder = Recorder(["default"], 100, 1.0, budget)
    engine = ReplicaEngine(profile, "default", budget, recorder)
    engine.submit(Request(0.0, 1000, 301), 0.0)
    engine.advance(100.0)
    (outcome,) = recorder.outcomes
    assert (outcome.gaps, outcome.slow_gaps) == (300, 199)


def test_every_finished_request_is_within_late_or_slow_and_the_causes_add_up():
    """miss_causes, what bench/live.py compares with a live run cause by cause: a late first token, or a first
    token in time with more than 5% of gaps over the ITL budget; the within-both count is the rest."""
    budget = CPU.step.seconds(0, 2, 0)  # a pure decode step fits, a step carrying a long prompt's chunk does not
    recorder = Recorder(["default"], 1000, 1.0, budget)
    engine = ReplicaEngine(CPU, "default", budget, recorder)
    requests = [Request(i * 1.0, 16, 32) for i in range(10)]  # one at a time: within
    requests += [Request(20.0, 16, 64)] + [Request(20.05 + 0.1 * i, 400, 2) for i in range(10)]  # a decoder among prefills
    requests += [Request(40.0, 400, 4) for _ in range(40)]  # a burst: first tokens queue past the TTFT budget
    for request in requests:
        engine.advance(request.arrival)
        engine.submit(request, request.arrival)
    engine.advance(990.0)
    causes = recorder.miss_causes()
    within = round(recorder.fraction_within_both(len(requests)) * len(requests))
    assert within >= 10 and causes["late"] > 0 and causes["slow_itl"] > 0
    assert within + causes["late"] + causes["slow_itl"] == len(requests)
    decoder = next(o for o in recorder.outcomes if o.arrival == 20.0)
    assert decoder.ttft <= 1.0 and decoder.slow_gaps > 0.05 * decoder.gaps  # the prefills stalled its decode
    assert 0 < causes["slow_gap_share"] < 1
    missed = recorder.missed_arrivals()
    assert len(missed) == causes["late"] + causes["slow_itl"] and missed == sorted(missed)


def step_by_step(profile, requests, itl_budget):
    """The replica's rules applied one engine step at a time, with nothing batched into runs: the reference
    the event-by-event engine must reproduce. Returns {arrival: (ttft, finished_at, slow_gaps)}."""
    step = profile.step
    waiting, prefilling, decoding, results = list(requests), [], [], {}
    clock, steps, slow = 0.0, 0, 0
    done_prefill = {id(r): 0 for r in requests}
    while waiting or prefilling or decoding:
        while waiting and len(prefilling) + len(decoding) < profile.max_batch_size:
            prefilling.append(waiting.pop(0))
        budget = max(profile.max_batched_tokens - len(decoding), 0)
        chunks = []
        for request in prefilling:
            if budget <= 0:
                break
            chunk = min(request.prompt_tokens - done_prefill[id(request)], budget)
            chunks.append((request, chunk))
            budget -= chunk
        attended = sum(r.prompt_tokens + steps - joined for r, joined, _, _ in decoding)
        attended += sum(c * (done_prefill[id(r)] + (c + 1) / 2) for r, c in chunks)
        duration = step.seconds(sum(c for _, c in chunks), len(decoding), attended)
        clock, steps = clock + duration, steps + 1
        slow += duration > itl_budget
        for entry in [e for e in decoding if e[1] + e[0].output_tokens - 1 <= steps]:
            decoding.remove(entry)
            request, _, first, joined_slow = entry
            results[request.arrival] = (first - request.arrival, clock, slow - joined_slow)
        for request, chunk in chunks:
            done_prefill[id(request)] += chunk
            if done_prefill[id(request)] >= request.prompt_tokens:
                prefilling.remove(request)
                if request.output_tokens <= 1:
                    results[request.arrival] = (clock - request.arrival, clock, 0)
                else:
                    decoding.append((request, steps, clock, slow))
    return results


@pytest.mark.parametrize("per_attended", [0.0, 3e-7])
def test_event_by_event_engine_matches_a_step_by_step_replay(per_attended):
    rng = np.random.default_rng(7)
    profile = with_attention(CPU, per_attended)
    requests = [Request(i * 1e-6, int(rng.integers(1, 1500)), int(rng.integers(1, 120))) for i in range(40)]
    budget = profile.step.seconds(profile.max_batched_tokens / 2, 8, 4000)  # some steps over, some under
    recorder, _ = run_engine(profile, requests, until=1e4, itl_budget=budget)
    expected = step_by_step(profile, requests, budget)
    assert len(recorder.outcomes) == len(requests)
    assert sum(slow for _, _, slow in expected.values()) > 0  # the budget splits the steps
    for outcome in recorder.outcomes:
        ttft, finished_at, slow_gaps = expected[outcome.arrival]
        assert outcome.ttft == pytest.approx(ttft, rel=1e-9)
        assert outcome.finished_at == pytest.approx(finished_at, rel=1e-9)
        assert outcome.slow_gaps == slow_gaps


def test_concurrent_requests_share_steps_and_chunks_slow_the_decoders():
    # The second prompt's 512-token chunks run while the first decodes: those gaps exceed a tight ITL budget.
    budget = H100.step.seconds(0, 1) * 1.5
    recorder = Recorder(["default"], 100, 1.0, budget)
    engine = ReplicaEngine(H100, "default", budget, recorder)
    engine.submit(Request(0.0, 10, 200), 0.0)
    engine.advance(0.05)
    engine.submit(Request(0.05, 2000, 5), 0.05)
    engine.advance(100.0)
    first = next(o for o in recorder.outcomes if o.gaps == 199)
    assert first.slow_gaps == 4  # 2000 tokens in chunks of 511 (512 less the decode token): 4 slow steps
    itl_counts = recorder.series["default"].itl.sum(axis=0)
    assert itl_counts.sum() == 199 + 4


def test_batch_size_bounds_admission():
    recorder = Recorder(["default"], 100, 1.0, 1.0)
    engine = ReplicaEngine(CPU, "default", 1.0, recorder)
    for _ in range(CPU.max_batch_size + 4):
        engine.submit(Request(0.0, 10, 1000), 0.0)
    engine.advance(1.0)
    assert engine.running == CPU.max_batch_size
    assert len(engine.waiting) == 4


def test_histogram_quantile_and_exact_within_budget():
    bounds = [0.1, 0.5, 1.0, 2.0]
    counts = np.array([50, 40, 10, 0, 0])
    assert histogram_quantile(0.5, cumulative_buckets(bounds, counts)) == pytest.approx(0.1)
    assert histogram_quantile(0.95, cumulative_buckets(bounds, counts)) == pytest.approx(0.5 + 0.5 * 5 / 10)
    assert histogram_quantile(0.95, cumulative_buckets(bounds, np.zeros(5))) is None
    assert histogram_quantile(0.999, cumulative_buckets(bounds, np.array([0, 0, 0, 0, 3]))) == 2.0  # past the top
    recorder = Recorder(["default"], 100, ttft_budget=0.7, itl_budget=0.05)
    for value in [0.1] * 94 + [0.7] + [0.71] * 5:  # exactly at the budget counts as within
        recorder.ttft("default", 10.0, value)
    *_, ttft_within, _, samples = recorder.latency("default", 60.0, 60.0)
    assert ttft_within == pytest.approx(0.95) and samples == 100


def test_fleet_cold_start_promotion_and_gateway_queue():
    recorder = Recorder(["default"], 1000, 1.0, 1.0)
    fleet = Fleet(CPU, ["default"], recorder, 1.0, cold_start=100.0, promotion=2.0)
    fleet.apply("default", 1, 1, 0.0)  # nothing exists: two cold starts
    fleet.dispatch(Request(1.0, 10, 5), 1.0)
    assert len(fleet.gateway["default"]) == 1  # no serving pod yet: waits at the gateway
    fleet.on_time(100.0)
    assert sorted(p.state for p in fleet.pods) == ["promoting", WARM]
    fleet.on_time(102.0)
    assert fleet.serving_count("default") == 1 and not fleet.gateway["default"]
    fleet.apply("default", 2, 1, 110.0)  # the warm pod is promoted, a cold start refills the pool
    fleet.on_time(112.0)
    assert fleet.serving_count("default") == 2
    assert len(fleet.pods) == 3
    fleet.apply("default", 1, 0, 120.0)
    fleet.advance(200.0)
    fleet.on_time(200.0)
    assert [p.state for p in fleet.pods] == [SERVING]
    assert fleet.pod_seconds(0.0, 200.0) > 200.0 + 100.0  # warm and starting pods cost too


def test_azure_loader_and_errors(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n")
    requests = trace_files.load_csv(path)
    assert [r.prompt_tokens for r in requests] == [374, 396]
    assert requests[1].arrival == pytest.approx(4.3145790, abs=1e-5)
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,x,1\n")
    with pytest.raises(trace_files.TraceError, match="bad.csv:2"):
        trace_files.load_csv(bad)
    with pytest.raises(trace_files.TraceError, match="unknown trace format"):
        trace_files.load_trace(tmp_path / "x.parquet")


def test_mooncake_loader_spreads_each_tick(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [f'{{"timestamp": {t}, "input_length": 100, "output_length": 10, "hash_ids": [1]}}'
             for t in [0, 0, 0, 3000, 3000, 6000]]
    path.write_text("\n".join(lines) + "\n")
    requests = trace_files.load_json(path)
    assert len(requests) == 6
    assert all(0 <= r.arrival < 9.0 for r in requests)
    assert len({round(r.arrival, 6) for r in requests}) == 6  # no two arrive in lockstep
    (tmp_path / "broken.jsonl").write_text('{"timestamp": 1}\n')
    with pytest.raises(trace_files.TraceError, match="broken.jsonl:1"):
        trace_files.load_json(tmp_path / "broken.jsonl")


def test_rate_token_scaling_and_synthetic_bursts():
    base = [Request(float(i), 100, 20) for i in range(1000)]
    assert 2800 < len(traces.scale_rate(base, 3.0)) <= 3000
    assert 400 < len(traces.scale_rate(base, 0.5)) < 600
    clipped = traces.scale_tokens([Request(0.0, 10000, 400)], 1.0, max_model_len=2048)[0]
    assert clipped.prompt_tokens + clipped.output_tokens <= 2048
    bursty = traces.synthetic_bursty(1200.0, base_rate=1.0, burst_rate=10.0, seed=1)
    per_minute = traces.per_minute_rates(bursty)
    assert max(per_minute) > 4 * min(per_minute[:8])


def test_preroll_mirrors_the_opening():
    requests = [Request(0.0, 1, 1), Request(10.0, 2, 2), Request(400.0, 3, 3)]
    rolled = with_preroll(requests, 300.0)
    assert [r.prompt_tokens for r in rolled] == [2, 1, 1, 2, 3]
    assert [r.arrival for r in rolled][2:] == [300.0, 310.0, 700.0]


@pytest.mark.skipif(not SHARED.exists(), reason="shared traces not present (../shared/traces)")
def test_shared_traces_load_completely():
    assert len(trace_files.load_csv(SHARED / "AzureLLMInferenceTrace_conv.csv")) == 19366
    mooncake = trace_files.load_json(SHARED / "conversation_trace.jsonl")
    assert len(mooncake) == 12031 and mooncake[-1].arrival < 3600


def test_full_runs_are_deterministic_and_respond_to_fleet_size():
    spec = make_spec(min_replicas=1, max_replicas=30, warm=1, ttft="2s", itl="150ms")
    requests = traces.synthetic_bursty(900.0, base_rate=1.0, burst_rate=5.0, burst_every=450.0,
                                       burst_length=120.0, prompt_tokens=400, output_tokens=60, seed=3)
    small = simulate(requests, CPU, spec, StaticPeak(1), cold_start=60.0)
    big = simulate(requests, CPU, spec, StaticPeak(8), cold_start=60.0)
    assert small.within_both < big.within_both
    assert big.replica_hours == pytest.approx(8 * requests[-1].arrival / 3600, rel=0.01)
    ours = simulate(requests, CPU, spec, SloservePolicy(CPU), cold_start=60.0)
    again = simulate(requests, CPU, spec, SloservePolicy(CPU), cold_start=60.0)
    assert ours.row() == again.row()
    assert ours.within_both >= 0.95
    assert ours.replica_hours < big.replica_hours
    for baseline in (KedaHpa(target_rate=1.0), KnativeKpa(target_concurrency=4), LlmdSloRatio()):
        result = simulate(requests, CPU, spec, baseline, cold_start=60.0)
        assert 0.0 <= result.within_both <= 1.0 and result.replica_hours > 0


def test_replicas_sharing_a_host_step_slower_once_they_want_more_cores_than_it_has():
    """Local mode's replicas share one machine: a busy replica (or one loading weights) wants a core, and
    beyond the host's cores every busy one steps proportionally slower. A cluster (host None) does not."""
    from sloserve_operator.simulate.fleet import SharedHost

    host = SharedHost(cores=2.0)
    assert host.slowdown(busy=2, starting=0) == 1.0
    assert host.slowdown(busy=3, starting=0) == pytest.approx(1.5)
    assert host.slowdown(busy=2, starting=1) == pytest.approx(1.5)
    assert SharedHost(cores=2.0, starting_pod_cores=0.5).slowdown(busy=2, starting=2) == pytest.approx(1.5)
    # the rest of the machine (router, client) spends CPU per request: 20 ms at 25 req/s is half a core
    assert SharedHost(cores=2.0, cpu_per_request=0.02).slowdown(busy=2, starting=0, request_rate=25.0) == \
        pytest.approx(1.25)

    spec = make_spec(min_replicas=2, max_replicas=2, ttft="1s", itl="500ms")
    capacity = CPU.max_rate_within_budget(1.0, 0.5, 200, 32)
    gap = 1.0 / (1.5 * capacity)  # 1.5 replicas' worth of load on a fleet of 2
    requests = [Request(i * gap, 200, 32) for i in range(int(120 / gap))]

    def within(host):
        return simulate(requests, CPU, spec, StaticPeak(2), warmup=0.0, host=host).within_both

    own = within(None)
    assert own > 0.95
    assert within(SharedHost(cores=2.0)) == own  # a core per replica: the same as a node each
    assert within(SharedHost(cores=1.0)) < own - 0.2  # 1.5 replicas' work on one core: overloaded


def test_a_replica_starting_on_a_busy_shared_host_loads_its_weights_slower():
    """Loading weights wants a core too: on one core beside a busy replica a cold start takes twice as long
    (what live local mode showed: a 7 s cold start took 17 s in a burst on 2 cores)."""
    from sloserve_operator.simulate.fleet import STARTING, SharedHost

    def ready_after(host):
        recorder = Recorder(["default"], 200.0, 1.0, 1.0)
        fleet = Fleet(CPU, ["default"], recorder, 1.0, cold_start=10.0, promotion=0.0, host=host)
        fleet.start_ready("default", 1, 0, 0.0)
        fleet.dispatch(Request(0.0, 100, 5000), 0.0)  # keeps the first replica busy throughout
        fleet.apply("default", 2, 0, 0.0)
        for tenth in range(1, 600):
            now = tenth / 10
            fleet.advance(now)
            fleet.on_time(now)
            if not fleet.in_region("default", STARTING):
                return now
        return None

    assert ready_after(None) == pytest.approx(10.0, abs=0.11)
    assert ready_after(SharedHost(cores=2.0)) == pytest.approx(10.0, abs=0.11)  # a core each: no slower
    assert ready_after(SharedHost(cores=1.0)) == pytest.approx(20.0, abs=0.3)  # half a core: twice as long


class _UnawareRouter(Router):
    """Routes least-outstanding, but tells the policy it is a random pick."""

    @property
    def load_aware(self) -> bool:
        return False


def test_the_simulated_policy_sizes_for_the_router_it_is_behind():
    """The simulator tells the policy which router it is behind: told of a load-aware one, the policy models
    one pooled prefill queue; told of a random pick, a queue per replica, and the same requests through the
    same routing then get more replicas."""
    spec = make_spec(max_replicas=100, warm=0, ttft="1s", itl="50ms")
    rng = np.random.default_rng(5)
    arrivals = np.cumsum(rng.exponential(1.0 / 100.0, size=100 * 360))
    requests = [Request(float(t), int(rng.integers(1000, 3000)), 28) for t in arrivals]
    told = {aware: simulate(requests, H100, spec, SloservePolicy(H100), initial_serving=20, warmup=0,
                            router=Router("least-outstanding") if aware else _UnawareRouter("least-outstanding"))
            for aware in (True, False)}
    assert told[True].replica_hours < told[False].replica_hours, {k: v.replica_hours for k, v in told.items()}
    assert Router("random").load_aware is False
    assert all(Router(name).load_aware for name in ("least-outstanding", "prefix-affinity", "prefix-scorer"))


def test_a_trace_without_regions_is_split_over_the_specs_regions_by_weight():
    spec = make_spec(min_replicas=2, max_replicas=30, warm=1, ttft="2s", itl="150ms",
                     regions=[{"name": "us", "weight": 3}, {"name": "eu", "weight": 1}])
    requests = traces.synthetic_bursty(900.0, base_rate=2.0, burst_rate=6.0, burst_every=450.0,
                                       burst_length=120.0, prompt_tokens=400, output_tokens=60, seed=5)
    placed = into_regions(requests, spec)
    assert into_regions(requests, spec) == placed  # every policy replays the same split
    share = sum(r.region == "us" for r in placed) / len(placed)
    assert 0.7 < share < 0.8 and {r.region for r in placed} == {"us", "eu"}
    assert into_regions(placed, spec) is placed  # requests that name a placed region keep it
    result = simulate(requests, CPU, spec, SloservePolicy(CPU), cold_start=60.0)
    assert result.requests == len(requests) and result.within_both >= 0.95
