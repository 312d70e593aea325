"""The engine loads and steps on one compute thread (compute_thread.py says why), and the thread behaves
like an executor: results and errors come back to the awaiting coroutine."""

from __future__ import annotations

import threading

import pytest
from sloserve_runtime.engine.compute_thread import ComputeThread
from sloserve_runtime.engine.core import AsyncEngine
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.testing import make_tiny_model


async def test_results_and_errors_cross_back() -> None:
    compute = ComputeThread("test-compute")
    try:
        assert await compute.call(lambda: threading.current_thread().name) == "test-compute"
        with pytest.raises(ZeroDivisionError):
            await compute.call(lambda: 1 / 0)
        assert await compute.call(lambda: 41 + 1) == 42  # still serving after an error
    finally:
        compute.close()
    compute.join(timeout=10)
    assert not compute.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        compute.submit(lambda: None)


async def test_engine_steps_on_the_thread_that_loaded_it(tmp_path) -> None:
    config = EngineConfig(model=str(make_tiny_model(tmp_path)), dtype="float32", max_model_len=128,
                          kv_cache_blocks=64, block_size=4)
    load_threads: list[threading.Thread] = []
    step_threads: set[threading.Thread] = set()

    def load() -> AsyncEngine:
        load_threads.append(threading.current_thread())
        return AsyncEngine.from_config(config)

    loader = ComputeThread("test-loader")
    engine = await loader.call(load)
    step = engine.core.step

    def recording_step():
        step_threads.add(threading.current_thread())
        return step()

    engine.core.step = recording_step
    await engine.start()
    try:
        params = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
        outputs = [out async for out in engine.generate("r1", [1, 2, 3, 4], params)]
        assert outputs[-1].finished and outputs[-1].completion_tokens == 5
    finally:
        await engine.shutdown()
    assert load_threads == [loader]
    assert step_threads == {loader}, "steps ran on another thread than the one that loaded the weights"
    loader.join(timeout=10)
    assert not loader.is_alive(), "shutdown leaves the compute thread running"


async def test_from_config_outside_a_compute_thread_makes_one(tmp_path) -> None:
    config = EngineConfig(model=str(make_tiny_model(tmp_path)), dtype="float32", max_model_len=128,
                          kv_cache_blocks=64, block_size=4)
    engine = AsyncEngine.from_config(config)
    assert isinstance(engine.compute, ComputeThread) and engine.compute is not threading.current_thread()
    await engine.start()
    try:
        params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
        assert [out async for out in engine.generate("r1", [5, 6, 7], params)][-1].finished
    finally:
        await engine.shutdown()
