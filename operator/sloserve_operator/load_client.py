"""The one load client: streaming /v1/completions requests timed at chunk arrival, and their percentiles.

`sloserve load` (local/loadgen.py, open loop) and `sloserve profile` (autoscaler/decide/profile.py, closed
loop) both send through LoadClient, so they time requests the same way and report percentiles with the same
definition. TTFT is the time from sending to the first streamed chunk carrying text; ITL the gap between
successive chunks carrying text. aiohttp keeps the client's own CPU share small (the server under test shares
the machine's cores).

Percentiles are nearest-rank (no interpolation): the reported p95 is a latency some request actually saw, and
"p95 <= budget" holds exactly when at least 95% of the samples are within the budget, which is how the SLO,
the operator's exact within-budget fractions and the simulator count. An interpolated p95 can sit above the
budget while 95% of the requests met it.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

WORDS = (
    "river mountain signal garden window lantern harbor engine violet market silver orbit planet meadow "
    "candle thunder copper forest canyon pepper marble falcon ribbon glacier basket compass tunnel velvet "
    "island rocket saddle meteor puzzle walnut anchor blossom cactus dolphin ember feather harvest jungle "
    "kettle ladder magnet nectar oyster pillow quartz raven spiral timber umbrella valley whistle yellow"
).split()


def make_prompt(index: int, tokens: int, seed: int = 0) -> str:
    """About `tokens` tokens of distinct text (a unique lead-in: no prefix-cache reuse between requests)."""
    rng = random.Random(seed * 1_000_003 + index)
    words = [rng.choice(WORDS) for _ in range(max(tokens - 4, 1))]
    return f"Request {index}: " + " ".join(words)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100, no interpolation; see the module docstring), None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(max(math.ceil(q / 100 * len(ordered)) - 1, 0), len(ordered) - 1)]


@dataclass
class RequestResult:
    index: int
    sent_at: float = 0.0  # seconds after the start of the run
    prompt_tokens: int = 0  # what the caller asked for
    ok: bool = False
    status: int | None = None
    error: str | None = None
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)
    e2e: float | None = None
    output_chunks: int = 0
    completion_tokens: int | None = None  # from the usage chunk, when the server sends it
    usage_prompt_tokens: int | None = None  # the server's count of the prompt, from the usage chunk

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.output_chunks

    @property
    def itl_p95(self) -> float | None:
        return percentile(self.itls, 95) if self.itls else None

    def within(self, ttft_budget: float, itl_budget: float) -> bool:
        """Both budgets met, as the simulator counts it: TTFT within budget and at most 5% of the request's
        inter-token gaps over the ITL budget (its own p95 ITL within budget)."""
        if not self.ok or self.ttft is None or self.ttft > ttft_budget:
            return False
        return sum(1 for gap in self.itls if gap > itl_budget) <= 0.05 * len(self.itls)


class LoadClient:
    """One aiohttp session against one server; complete() never raises for HTTP or connection errors."""

    def __init__(self, url: str, model: str, timeout: float, *, max_connections: int = 0) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections),
                                              timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=10.0))

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> LoadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def complete(self, prompt: str, max_tokens: int, result: RequestResult | None = None,
                       extra: dict[str, Any] | None = None) -> RequestResult:
        """One streaming greedy completion; fills and returns `result` (ok only once [DONE] arrived)."""
        result = result if result is not None else RequestResult(index=0)
        body = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0,
                "stream": True, "stream_options": {"include_usage": True}, **(extra or {})}
        started = time.perf_counter()
        last = None
        try:
            async with self._session.post(self.url + "/v1/completions", json=body) as response:
                result.status = response.status
                if response.status != 200:
                    result.error = (await response.text())[:500]
                    return result
                finished = False
                async for raw in response.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        finished = True  # read on to the end of the body so the connection can be reused
                        continue
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        result.error = str(chunk["error"])[:500]
                        return result
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        result.completion_tokens = usage.get("completion_tokens")
                        result.usage_prompt_tokens = usage.get("prompt_tokens")
                    choices = chunk.get("choices") or []
                    if not any(choice.get("text") for choice in choices):
                        continue
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - started
                    else:
                        result.itls.append(now - last)
                    last = now
                    result.output_chunks += 1
                result.e2e = time.perf_counter() - started
                result.ok = finished
                if not finished:
                    result.error = "stream ended without [DONE]"
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as error:
            result.error = f"{type(error).__name__}: {error}"
        return result


async def served_model(url: str, timeout: float = 10.0) -> str:
    """The first model the endpoint lists (what requests name when the user gives no --model)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.get(url.rstrip("/") + "/v1/models") as response:
            response.raise_for_status()
            data = await response.json()
    models = data.get("data") or []
    if not models:
        raise RuntimeError(f"{url}/v1/models lists no model")
    return str(models[0]["id"])
