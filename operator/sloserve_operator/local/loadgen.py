"""A small open-loop load generator: real streaming /v1/completions requests, TTFT and ITL per request.

Open loop: requests are sent at their scheduled arrival times whatever the server does, so overload shows
as growing TTFT (as it would for users), not as a slower sender. TTFT is the time from sending to the first
streamed chunk carrying text; ITL is the gap between successive chunks carrying text. aiohttp keeps the
client's own CPU share small (the server under test shares the machine's two cores).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from sloserve_operator.local.workload import Arrival, make_prompt


@dataclass
class RequestResult:
    index: int
    sent_at: float  # seconds after the start of the run
    prompt_tokens: int
    ok: bool = False
    status: int | None = None
    error: str | None = None
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)
    e2e: float | None = None
    output_chunks: int = 0
    completion_tokens: int | None = None  # from the usage chunk, when the server sends it

    @property
    def itl_p95(self) -> float | None:
        return percentile(self.itls, 95) if self.itls else None

    def within(self, ttft_budget: float, itl_budget: float) -> bool:
        """Both budgets met, as the simulator counts it: TTFT within budget and at most 5% of the request's
        inter-token gaps over the ITL budget (its own p95 ITL within budget)."""
        if not self.ok or self.ttft is None or self.ttft > ttft_budget:
            return False
        return sum(1 for gap in self.itls if gap > itl_budget) <= 0.05 * len(self.itls)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (no interpolation), None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(max(math.ceil(q / 100 * len(ordered)) - 1, 0), len(ordered) - 1)]


@dataclass
class LoadReport:
    results: list[RequestResult]
    duration: float

    @property
    def ok(self) -> list[RequestResult]:
        return [r for r in self.results if r.ok]

    @property
    def failed(self) -> list[RequestResult]:
        return [r for r in self.results if not r.ok]

    def ttfts(self) -> list[float]:
        return [r.ttft for r in self.ok if r.ttft is not None]

    def itls(self) -> list[float]:
        return [gap for r in self.ok for gap in r.itls]

    def within_budget(self, ttft_budget: float, itl_budget: float) -> float | None:
        if not self.results:
            return None
        return sum(r.within(ttft_budget, itl_budget) for r in self.results) / len(self.results)

    def summary(self, ttft_budget: float | None = None, itl_budget: float | None = None) -> dict:
        ttfts, itls = self.ttfts(), self.itls()
        tokens = sum(r.completion_tokens or r.output_chunks for r in self.ok)
        summary = {
            "requests": len(self.results), "ok": len(self.ok), "failed": len(self.failed),
            "duration_s": round(self.duration, 2),
            "ttft_p50": percentile(ttfts, 50), "ttft_p95": percentile(ttfts, 95), "ttft_p99": percentile(ttfts, 99),
            "itl_p50": percentile(itls, 50), "itl_p95": percentile(itls, 95), "itl_p99": percentile(itls, 99),
            "output_tokens_per_s": tokens / self.duration if self.duration > 0 else None,
        }
        if ttft_budget is not None and itl_budget is not None:
            summary["within_budget"] = self.within_budget(ttft_budget, itl_budget)
        errors: dict[str, int] = {}
        for result in self.failed:
            key = f"{result.status or 'error'}: {(result.error or '')[:120]}"
            errors[key] = errors.get(key, 0) + 1
        summary["errors"] = errors
        return summary


async def send_one(session: aiohttp.ClientSession, url: str, model: str, arrival: Arrival,
                   result: RequestResult, *, seed: int, extra: dict | None = None) -> None:
    """One streaming completion; fills `result` (never raises for HTTP or connection errors)."""
    body = {"model": model, "prompt": make_prompt(result.index, arrival.prompt_tokens, seed),
            "max_tokens": arrival.max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}, **(extra or {})}
    started = time.perf_counter()
    last = None
    try:
        async with session.post(url + "/v1/completions", json=body) as response:
            result.status = response.status
            if response.status != 200:
                result.error = (await response.text())[:500]
                return
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
                    return
                if chunk.get("usage"):
                    result.completion_tokens = chunk["usage"].get("completion_tokens")
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


ProgressCallback = Callable[[float, list[RequestResult]], None]


async def run_load(url: str, model: str, arrivals: list[Arrival], *, seed: int = 0,
                   request_timeout: float = 300.0, max_in_flight: int = 512, extra: dict | None = None,
                   on_progress: ProgressCallback | None = None, progress_every: float = 5.0,
                   stop: asyncio.Event | None = None) -> LoadReport:
    """Send every arrival at its time (bounded by `max_in_flight`); return when all have finished."""
    url = url.rstrip("/")
    results: list[RequestResult] = []
    limit = asyncio.Semaphore(max_in_flight)
    timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=10.0)
    start = time.perf_counter()

    async def fire(index: int, arrival: Arrival) -> None:
        async with limit:
            result = RequestResult(index=index, sent_at=time.perf_counter() - start,
                                   prompt_tokens=arrival.prompt_tokens)
            results.append(result)
            await send_one(session, url, model, arrival, result, seed=seed, extra=extra)

    async def report() -> None:
        while True:
            await asyncio.sleep(progress_every)
            if on_progress:
                on_progress(time.perf_counter() - start, results)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        reporter = asyncio.create_task(report())
        tasks = []
        try:
            for index, arrival in enumerate(sorted(arrivals, key=lambda a: a.at)):
                delay = arrival.at - (time.perf_counter() - start)
                if stop is not None and stop.is_set():
                    break
                if delay > 0:
                    if stop is None:
                        await asyncio.sleep(delay)
                    else:
                        try:
                            await asyncio.wait_for(stop.wait(), timeout=delay)
                            break
                        except TimeoutError:
                            pass
                tasks.append(asyncio.create_task(fire(index, arrival)))
            await asyncio.gather(*tasks)
        finally:
            reporter.cancel()
            for task in tasks:
                task.cancel()
    return LoadReport(sorted(results, key=lambda r: r.index), time.perf_counter() - start)


async def served_model(url: str) -> str:
    """The first model the endpoint lists (what requests name when the user gives no --model)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0)) as session:
        async with session.get(url.rstrip("/") + "/v1/models") as response:
            response.raise_for_status()
            data = await response.json()
    models = data.get("data") or []
    if not models:
        raise RuntimeError(f"{url}/v1/models lists no model")
    return models[0]["id"]
