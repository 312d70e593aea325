"""Lifecycle of the runtime server: 503 while loading, 429 past --max-queue, and the SIGTERM drain
(no in-flight request lost; past --drain-timeout the rest is aborted; exit code 0)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import tritonclient.grpc.aio as grpc_aio
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.server.app import Runtime, load_real_engine
from sloserve_runtime.server.frontend import ServerOptions

pytestmark = pytest.mark.timeout(120)
MODEL = "tiny"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def body(max_tokens: int, stream: bool, prompt: str = "Drain me gently") -> dict:
    return {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": stream}


def run_streamed(url: str, max_tokens: int) -> dict:
    """One streamed completion; returns what the client saw."""
    text, reasons, done = [], [], False
    with httpx.stream("POST", url + "/v1/completions", json=body(max_tokens, True), timeout=60) as response:
        status = response.status_code
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            choice = json.loads(line[6:])["choices"][0]
            text.append(choice["text"])
            reasons.append(choice["finish_reason"])
    return {"status": status, "chunks": len(text), "finish_reason": reasons[-1] if reasons else None,
            "done": done}


def run_whole(url: str, max_tokens: int) -> dict:
    response = httpx.post(url + "/v1/completions", json=body(max_tokens, False), timeout=60)
    data = response.json()
    return {"status": response.status_code, "tokens": data["usage"]["completion_tokens"],
            "finish_reason": data["choices"][0]["finish_reason"]}


async def test_loading_answers_503_until_warm(tiny_model_dir: Any) -> None:
    """In-process, with the real engine whose load is held at a gate, so "loading" lasts as long as needed."""
    gate = threading.Event()

    def gated_loader(config: EngineConfig, observer: Any) -> Any:
        if not gate.wait(timeout=60):
            raise TimeoutError("test gate never opened")
        return load_real_engine(config, observer)

    port, grpc_port = free_port(), free_port()
    runtime = Runtime(EngineConfig(model=str(tiny_model_dir), served_model_name=MODEL, threads=1,
                                   max_model_len=256),
                      ServerOptions(host="127.0.0.1", port=port, grpc_port=grpc_port, log_level="warning"),
                      load_engine=gated_loader)
    served = asyncio.create_task(runtime.run(handle_signals=False))
    grpc_client = grpc_aio.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(200):
                try:
                    health = await client.get("/health")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            assert health.status_code == 200 and health.json()["phase"] == "loading"
            assert (await client.get("/ready")).status_code == 503
            assert (await client.get("/v2/health/live")).status_code == 200
            assert (await client.get("/v2/health/ready")).status_code == 503
            refused = await client.post("/v1/completions", json=body(4, False))
            assert refused.status_code == 503 and "Retry-After" in refused.headers
            assert refused.json()["error"]["code"] == "loading"
            assert (await client.get("/v1/models")).status_code == 503
            assert await grpc_client.is_server_live() and not await grpc_client.is_server_ready()

            gate.set()
            for _ in range(600):
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.05)
            served_after = await client.post("/v1/completions", json=body(4, False))
            assert served_after.status_code == 200 and served_after.json()["usage"]["completion_tokens"] == 4
            assert await grpc_client.is_server_ready() and await grpc_client.is_model_ready(MODEL)
    finally:
        gate.set()
        await grpc_client.close()
        runtime.request_stop()
        assert await asyncio.wait_for(served, 30) == 0


def test_queue_limit_429_then_drain_timeout_aborts_and_exits_zero(tiny_model_dir: Any,
                                                                  runtime_factory: Any) -> None:
    """Past --max-queue: 429 on every protocol, nothing else disturbed. Then SIGTERM with a request that
    outlasts --drain-timeout: it is aborted (finish_reason "abort", stream properly ended), exit code 0."""
    runtime = runtime_factory(tiny_model_dir, "--max-batch-size", "1", "--max-queue", "1", "--drain-timeout", "0.5")
    url = runtime.url
    with httpx.Client(timeout=30) as client:
        with client.stream("POST", url + "/v1/completions", json=body(1500, True)) as running:
            assert running.status_code == 200
            # Until its first step the engine counts it as waiting; let it get its batch slot first.
            runtime.wait_engine(lambda s: s["num_running"] == 1 and s["num_waiting"] == 0)
            waiting = client.send(client.build_request("POST", url + "/v1/completions", json=body(1500, True)),
                                  stream=True)
            assert waiting.status_code == 200
            runtime.wait_engine(lambda s: s["num_running"] == 1 and s["num_waiting"] == 1)
            refused = client.post(url + "/v1/completions", json=body(4, False))
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert refused.json()["error"]["type"] == "rate_limit_error"
            refused_chat = client.post(url + "/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
            assert refused_chat.status_code == 429
            refused_v2 = client.post(url + f"/v2/models/{MODEL}/generate", json={"text_input": "hi"})
            assert refused_v2.status_code == 429 and "error" in refused_v2.json()
            waiting.close()
        runtime.wait_engine(lambda s: s["num_running"] == 0 and s["num_waiting"] == 0, timeout=10)
        after = client.post(url + "/v1/completions", json=body(4, False))
        assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 4

    with ThreadPoolExecutor(max_workers=1) as pool:
        endless = pool.submit(run_streamed, runtime.url, 2000)
        runtime.wait_engine(lambda s: s["num_running"] == 1)
        runtime.terminate()
        result = endless.result(timeout=60)
    assert runtime.wait_exit(timeout=30) == 0
    assert result["status"] == 200 and result["done"]
    assert result["finish_reason"] == "abort" and result["chunks"] < 2000


def test_sigterm_during_load_loses_no_inflight_request(tiny_model_dir: Any, runtime_factory: Any) -> None:
    runtime = runtime_factory(tiny_model_dir, "--max-batch-size", "4", "--drain-timeout", "60")
    tokens = 200
    with ThreadPoolExecutor(max_workers=6) as pool:
        streamed = [pool.submit(run_streamed, runtime.url, tokens) for _ in range(4)]
        whole = [pool.submit(run_whole, runtime.url, tokens) for _ in range(2)]
        # All six admitted (four running, two waiting for a batch slot) before the signal.
        runtime.wait_engine(lambda s: s["num_running"] + s["num_waiting"] == 6 and s["inflight"] == 6)
        runtime.terminate()
        deadline = time.monotonic() + 10
        while httpx.get(runtime.url + "/health").json()["phase"] != "draining":
            assert time.monotonic() < deadline, "never started draining"
            time.sleep(0.01)
        late = httpx.post(runtime.url + "/v1/completions", json=body(4, False))
        assert late.status_code == 503 and late.json()["error"]["code"] == "draining"
        assert httpx.get(runtime.url + "/ready").status_code == 503
        results_streamed = [f.result(timeout=90) for f in streamed]
        results_whole = [f.result(timeout=90) for f in whole]
    assert runtime.wait_exit(timeout=30) == 0
    for result in results_streamed:
        assert result["status"] == 200 and result["done"] and result["finish_reason"] == "length"
    for result in results_whole:
        assert result == {"status": 200, "tokens": tokens, "finish_reason": "length"}
    assert "drained" in runtime.log()
