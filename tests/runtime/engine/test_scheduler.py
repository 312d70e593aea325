"""Scheduler policy without a model: token budget, batch limit, admission order, preemption, no leaks.

`run_step` plays the model: Scheduler.postprocess advances every scheduled sequence (as in the engine) and
a token is appended to those it returns.
"""

from __future__ import annotations

from sloserve_runtime.engine.kv_cache import BlockAllocator
from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.engine.scheduler import Scheduler, SchedulerOutput
from sloserve_runtime.engine.sequence import Sequence, Status


def make_seq(rid: str, prompt_len: int, max_tokens: int = 4, first_token: int = 1000) -> Sequence:
    prompt = [first_token + i for i in range(prompt_len)]
    return Sequence(rid, prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0), arrival_time=0.0)


def run_step(sched: Scheduler) -> SchedulerOutput:
    out = sched.schedule()
    for seq in sched.postprocess(out.scheduled):
        seq.output_token_ids.append(7)
        if len(seq.output_token_ids) >= seq.params.max_tokens:
            sched.finish(seq, "length")
    return out


def drain(sched: Scheduler, limit: int = 500) -> list[SchedulerOutput]:
    steps = []
    for _ in range(limit):
        if not sched.has_work():
            return steps
        steps.append(run_step(sched))
    raise AssertionError("scheduler did not finish its work")


def test_chunked_prefill_respects_the_budget_and_keeps_decodes_running():
    sched = Scheduler(BlockAllocator(64, 4), max_batch_size=8, max_batched_tokens=10)
    short = make_seq("short", 3, max_tokens=20)
    sched.add(short)
    run_step(sched)  # short is decoding now
    long = make_seq("long", 35, first_token=2000)
    sched.add(long)
    steps: list[tuple[SchedulerOutput, bool]] = []  # (step, short still unfinished when it was scheduled)
    while sched.has_work():
        assert len(steps) < 500, "scheduler did not finish its work"
        short_unfinished = short.status != Status.FINISHED
        steps.append((run_step(sched), short_unfinished))
    assert all(s.num_tokens <= 10 for s, _ in steps)
    prefill_steps = [(s, unfinished) for s, unfinished in steps
                     if any(i.seq is long and i.num_new_tokens > 1 for i in s.scheduled)]
    assert len(prefill_steps) >= 4  # 35 tokens in chunks of at most 9 next to the decode
    # short (20 tokens to go) outlives long's prefill, so every chunk step must carry its decode too.
    assert all(unfinished for _, unfinished in prefill_steps)
    for s, _ in prefill_steps:
        assert any(i.seq is short and i.num_new_tokens == 1 for i in s.scheduled)
    sched.allocator.check_no_leaks()


def test_batch_size_limit_and_fcfs_admission():
    sched = Scheduler(BlockAllocator(64, 4), max_batch_size=2, max_batched_tokens=100)
    seqs = [make_seq(f"r{i}", 5, max_tokens=3, first_token=100 * i) for i in range(5)]
    for s in seqs:
        sched.add(s)
    order: list[str] = []
    for step in drain(sched):
        assert len(sched.running) <= 2
        order.extend(s.request_id for s in step.admitted)
    assert order == [s.request_id for s in seqs]
    sched.allocator.check_no_leaks()


def test_request_arriving_mid_flight_joins_at_the_next_step():
    sched = Scheduler(BlockAllocator(64, 4), max_batch_size=4, max_batched_tokens=64)
    a = make_seq("a", 8, max_tokens=50)
    sched.add(a)
    run_step(sched)
    run_step(sched)
    b = make_seq("b", 6, first_token=500)
    sched.add(b)
    step = run_step(sched)
    assert b in step.admitted and {i.seq.request_id for i in step.scheduled} == {"a", "b"}
    assert step.scheduled[0].num_new_tokens == 1  # the decode comes first in the flat batch


def test_preemption_by_recompute_when_blocks_run_out_and_nothing_leaks():
    # 9 usable blocks of 4 tokens; three sequences that each grow to 16 tokens (4 blocks) cannot all fit.
    sched = Scheduler(BlockAllocator(10, 4, enable_prefix_caching=False), max_batch_size=8,
                      max_batched_tokens=64)
    seqs = [make_seq(f"r{i}", 6, max_tokens=10, first_token=100 * i) for i in range(3)]
    for s in seqs:
        sched.add(s)
    steps = drain(sched)
    preempted = [p for s in steps for p in s.preempted]
    assert preempted, "expected at least one preemption"
    assert all(s.status == Status.FINISHED and len(s.output_token_ids) == 10 for s in seqs)
    sched.allocator.check_no_leaks()


def test_shared_prefix_is_served_from_cache():
    sched = Scheduler(BlockAllocator(64, 4), max_batch_size=4, max_batched_tokens=64)
    first = make_seq("first", 13, max_tokens=1)
    sched.add(first)
    drain(sched)
    second = make_seq("second", 13, max_tokens=1)  # same 13 tokens: 3 full blocks, last token recomputed
    sched.add(second)
    step = run_step(sched)
    assert step.prefix_lookups == [(13, 12)]
    assert step.scheduled[0].num_new_tokens == 1
    drain(sched)
    sched.allocator.check_no_leaks()


def test_abort_while_waiting_and_running_frees_blocks():
    sched = Scheduler(BlockAllocator(16, 4), max_batch_size=1, max_batched_tokens=64)
    running, waiting = make_seq("run", 9, max_tokens=50), make_seq("wait", 9, max_tokens=50)
    sched.add(running)
    sched.add(waiting)
    run_step(sched)
    sched.finish(waiting, "abort")
    sched.finish(running, "abort")
    assert not sched.has_work()
    sched.allocator.check_no_leaks()
