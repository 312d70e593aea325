"""AsyncEngine behaviour on a tiny random-weight model (fast): batching, aborts, prefix cache, preemption,
sampling parameters, and that every KV block comes back."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from sloserve_runtime.engine.core import AsyncEngine
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.observer import EngineObserver
from sloserve_runtime.engine.outputs import RequestOutput
from sloserve_runtime.engine.sampling_params import InvalidParameter, SamplingParams
from sloserve_runtime.testing import make_tiny_model

GREEDY = dict(temperature=0.0, ignore_eos=True)


class RecordingObserver(EngineObserver):
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.prefix: list[tuple[int, int]] = []
        self.finished: dict[str, str] = {}
        self.admitted_in_step: dict[str, int] = {}
        self.core = None  # set by the fixture: the step counter to stamp admissions with

    def on_scheduled(self, request_id, queue_seconds):
        self.admitted_in_step[request_id] = self.core.steps  # index of the step being built

    def on_first_token(self, request_id, ttft_seconds):
        self.counts["first_token"] += 1

    def on_token_gap(self, request_id, gap_seconds, tokens=1):
        self.counts["gap"] += tokens

    def on_preemption(self, request_id):
        self.counts["preemption"] += 1

    def on_prefix_cache(self, queried_tokens, hit_tokens):
        self.prefix.append((queried_tokens, hit_tokens))

    def on_finished(self, request_id, reason, e2e_seconds, prompt_tokens, generation_tokens):
        self.finished[request_id] = reason


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
async def make_engine(tiny_model):
    engines: list[AsyncEngine] = []

    async def factory(**overrides) -> tuple[AsyncEngine, RecordingObserver]:
        cfg = dict(model=str(tiny_model), dtype="float32", max_model_len=512, kv_cache_blocks=256, block_size=4)
        cfg.update(overrides)
        observer = RecordingObserver()
        engine = AsyncEngine.from_config(EngineConfig(**cfg), observer=observer)
        observer.core = engine.core
        await engine.start()
        engines.append(engine)
        return engine, observer

    yield factory
    for engine in engines:
        await engine.shutdown()


async def collect(engine: AsyncEngine, rid: str, prompt: list[int], params: SamplingParams) -> list[RequestOutput]:
    return [out async for out in engine.generate(rid, prompt, params)]


async def wait_until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.005)


def prompt_of(engine: AsyncEngine, n: int, offset: int = 0) -> list[int]:
    return [(1000 + offset + 7 * i) % 40000 + 100 for i in range(n)]


async def test_concurrent_requests_finish_with_exact_lengths_and_free_all_blocks(make_engine):
    engine, observer = await make_engine(max_batch_size=4, max_batched_tokens=32)
    params = SamplingParams(max_tokens=9, **GREEDY)
    results = await asyncio.gather(*(collect(engine, f"r{i}", prompt_of(engine, 5 + 11 * i, i), params)
                                     for i in range(7)))
    for outs in results:
        assert outs[-1].finished and outs[-1].finish_reason == "length"
        assert sum(len(o.new_token_ids) for o in outs) == 9 == outs[-1].completion_tokens
        assert not any(o.finished for o in outs[:-1])
    assert observer.counts["first_token"] == 7 and observer.counts["gap"] == 7 * 8
    await wait_until(lambda: engine.num_free_blocks == engine.num_total_blocks)
    engine.core.allocator.check_no_leaks()


async def test_batching_does_not_change_greedy_output(make_engine):
    engine, _ = await make_engine(max_batch_size=8, max_batched_tokens=24)
    params = SamplingParams(max_tokens=8, **GREEDY)
    prompts = [prompt_of(engine, 6 + 9 * i, 3 * i) for i in range(4)]
    alone = [[t for o in await collect(engine, f"solo{i}", p, params) for t in o.new_token_ids]
             for i, p in enumerate(prompts)]
    together = await asyncio.gather(*(collect(engine, f"batch{i}", p, params) for i, p in enumerate(prompts)))
    assert [[t for o in outs for t in o.new_token_ids] for outs in together] == alone


async def test_abort_frees_blocks_within_one_step(make_engine):
    engine, observer = await make_engine()
    stream = engine.generate("victim", prompt_of(engine, 40), SamplingParams(max_tokens=400, **GREEDY))
    await stream.__anext__()
    await stream.__anext__()
    assert engine.num_free_blocks < engine.num_total_blocks
    steps_at_abort = engine.core.steps
    await stream.aclose()
    await wait_until(lambda: engine.num_free_blocks == engine.num_total_blocks)
    assert engine.core.steps <= steps_at_abort + 1  # the step in flight may finish; the next one never runs
    assert observer.finished["victim"] == "abort"
    engine.core.allocator.check_no_leaks()


async def test_request_arriving_mid_flight_is_admitted_at_the_next_step(make_engine):
    engine, observer = await make_engine(max_batch_size=4)
    long_run = engine.generate("long", prompt_of(engine, 12), SamplingParams(max_tokens=200, **GREEDY))
    for _ in range(3):
        await long_run.__anext__()
    in_flight = engine.core.steps  # index of the step that may be running right now
    late = engine.generate("late", prompt_of(engine, 10, 5), SamplingParams(max_tokens=2, **GREEDY))
    first = await late.__anext__()
    assert first.new_token_ids
    # It joins the running batch in the step after the one in flight, not after "long" finishes.
    assert observer.admitted_in_step["late"] <= in_flight + 1
    assert "long" not in observer.finished
    await late.aclose()
    await long_run.aclose()


async def test_shared_prompt_prefix_hits_the_cache(make_engine):
    engine, observer = await make_engine(block_size=4)
    prefix = prompt_of(engine, 30)
    params = SamplingParams(max_tokens=2, **GREEDY)
    first = await collect(engine, "first", prefix + [5000, 5001], params)
    second = await collect(engine, "second", prefix + [6000, 6001, 6002], params)
    assert first[-1].cached_tokens == 0
    assert second[-1].cached_tokens == 28  # 7 full blocks of the 30 shared tokens
    assert observer.prefix[-1] == (33, 28)
    await wait_until(lambda: engine.num_free_blocks == engine.num_total_blocks)


async def test_preemption_by_recompute_keeps_outputs_identical_and_leaks_nothing(make_engine):
    params = SamplingParams(max_tokens=24, **GREEDY)
    roomy, _ = await make_engine(kv_cache_blocks=256)
    prompts = [prompt_of(roomy, 20, 13 * i) for i in range(4)]
    expected = await asyncio.gather(*(collect(roomy, f"r{i}", p, params) for i, p in enumerate(prompts)))
    # 4 sequences x 44 tokens need 44 blocks of 4; 30 forces preemption (and is enough for one sequence).
    tight, observer = await make_engine(kv_cache_blocks=30, prefix_caching=False, max_model_len=64)
    got = await asyncio.gather(*(collect(tight, f"r{i}", p, params) for i, p in enumerate(prompts)))
    assert observer.counts["preemption"] > 0
    tokens = [[t for o in outs for t in o.new_token_ids] for outs in got]
    assert tokens == [[t for o in outs for t in o.new_token_ids] for outs in expected]
    tight.core.allocator.check_no_leaks()


async def test_stop_strings_stop_tokens_min_tokens_and_logit_bias(make_engine):
    engine, _ = await make_engine()
    prompt = prompt_of(engine, 8)
    base = await collect(engine, "base", prompt, SamplingParams(max_tokens=12, **GREEDY))
    base_ids = [t for o in base for t in o.new_token_ids]
    base_text = "".join(o.new_text for o in base)
    assert base_text == engine.tokenizer.decode(base_ids)

    # stop token: generation ends at the first occurrence and its text is not returned
    stop_at = base_ids[4]
    first_index = base_ids.index(stop_at)
    outs = await collect(engine, "stop-id", prompt, SamplingParams(max_tokens=12, stop_token_ids=[stop_at], **GREEDY))
    assert outs[-1].finish_reason == "stop" and outs[-1].completion_tokens == first_index + 1

    # min_tokens bans the stop token until enough tokens exist
    outs = await collect(engine, "min", prompt, SamplingParams(max_tokens=12, stop_token_ids=[stop_at],
                                                               min_tokens=first_index + 2, **GREEDY))
    assert outs[-1].completion_tokens >= first_index + 2

    # stop string: cut from the text, reason "stop"
    needle = base_text[len(base_text) // 2:len(base_text) // 2 + 3]
    if needle.strip():
        outs = await collect(engine, "stop-str", prompt, SamplingParams(max_tokens=12, stop=[needle], **GREEDY))
        text = "".join(o.new_text for o in outs)
        assert outs[-1].finish_reason == "stop" and needle not in text
        assert base_text.startswith(text)

    # logit_bias +100 forces a token
    forced = 4242
    outs = await collect(engine, "bias", prompt, SamplingParams(max_tokens=5, logit_bias={forced: 100.0}, **GREEDY))
    assert [t for o in outs for t in o.new_token_ids] == [forced] * 5


async def test_seeded_sampling_is_reproducible(make_engine):
    engine, _ = await make_engine()
    prompt = prompt_of(engine, 8)
    params = dict(max_tokens=16, temperature=1.0, top_p=0.9, top_k=50, seed=1234, ignore_eos=True)
    runs = [[t for o in await collect(engine, f"s{i}", prompt, SamplingParams(**params)) for t in o.new_token_ids]
            for i in range(2)]
    assert runs[0] == runs[1]
    other = [t for o in await collect(engine, "s-other", prompt, SamplingParams(**{**params, "seed": 99}))
             for t in o.new_token_ids]
    assert other != runs[0]


async def test_invalid_requests_are_rejected_and_change_nothing(make_engine):
    engine, _ = await make_engine(max_model_len=64)
    with pytest.raises(InvalidParameter) as err:
        await collect(engine, "empty", [], SamplingParams())
    assert err.value.param == "prompt"
    with pytest.raises(InvalidParameter):
        await collect(engine, "long", list(range(100, 200)), SamplingParams())
    with pytest.raises(InvalidParameter):
        await collect(engine, "vocab", [10**7], SamplingParams())
    with pytest.raises(InvalidParameter):
        await collect(engine, "max", [5, 6], SamplingParams(max_tokens=0))
    outs = await collect(engine, "ok", [5, 6], SamplingParams(max_tokens=100, **GREEDY))
    assert outs[-1].finish_reason == "length" and outs[-1].completion_tokens == 62  # capped by max_model_len
    engine.core.allocator.check_no_leaks()
