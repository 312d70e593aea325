"""Local mode's router and the runtime's admission control, with real runtime processes (the tiny model):
a replica's 429 is retried on another replica while one is left, and passed through (Retry-After, OpenAI
error body) when none is; once capacity arrives (a second replica), the client sees no refusal.

The refusing replica runs with --max-queue 0, which makes every request a real runtime 429 (the same
response the SLO admission gives, with reason queue_full in its counter), so the test does not depend on
timing to overload a replica."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from sloserve_operator.local.replicas import free_port
from sloserve_operator.local.router import Router

pytestmark = pytest.mark.timeout(180)


class RuntimeProcess:
    def __init__(self, model: Path, log: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sloserve_runtime", "--model", str(model), "--served-model-name", "tiny",
             "--host", "127.0.0.1", "--port", str(self.port), "--threads", "1", "--max-model-len", "256", *flags],
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, seconds: float = 120.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the runtime exited during start-up"
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"runtime on {self.url} not ready within {seconds}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeProcess, RuntimeProcess]]:
    from sloserve_runtime.testing import make_tiny_model

    model = make_tiny_model(tmp_path_factory.mktemp("tiny-model"))
    logs = tmp_path_factory.mktemp("runtime-logs")
    full = RuntimeProcess(model, logs / "full.log", "--max-queue", "0")  # refuses everything: 429
    spare = RuntimeProcess(model, logs / "spare.log", "--admission-limit-ms", "5000")
    try:
        full.wait_ready()
        spare.wait_ready()
        yield full, spare
    finally:
        full.stop()
        spare.stop()


async def test_a_429_is_passed_through_then_retried_elsewhere_once_capacity_arrives(runtimes) -> None:
    full, spare = runtimes
    port = free_port()
    router = Router(policy="least-outstanding")
    await router.start("127.0.0.1", port)
    api = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    try:
        router.add("full", full.url)
        with pytest.raises(openai.RateLimitError) as refused:
            await api.completions.create(model="tiny", prompt="hello there", max_tokens=4)
        assert refused.value.response.headers["retry-after"].isdigit()
        error = refused.value.response.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert router.refusals_total == 1

        router.add("spare", spare.url)  # capacity arrives
        for index in range(12):  # least-outstanding sends some to "full" first: each is retried on "spare"
            answer = await api.completions.create(model="tiny", prompt=f"hello {index}", max_tokens=4,
                                                  extra_body={"ignore_eos": True})
            assert answer.usage.completion_tokens == 4
        assert router.refusals_total == 1 + 12  # "full" (first on ties) refused each; the client never saw it
        metrics = httpx.get(full.url + "/metrics").text
        refused_count = next(float(line.split()[-1]) for line in metrics.splitlines()
                             if line.startswith("sloserve:request_refused_total") and 'reason="queue_full"' in line)
        assert refused_count == router.refusals_total
    finally:
        await api.close()
        await router.stop()
