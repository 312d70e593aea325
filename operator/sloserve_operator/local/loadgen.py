"""A small open-loop load generator: real streaming /v1/completions requests, TTFT and ITL per request.

Open loop: requests are sent at their scheduled arrival times whatever the server does, so overload shows
as growing TTFT (as it would for users), not as a slower sender. Requests go through load_client.LoadClient
(the client `sloserve profile` uses too; its module says how TTFT, ITL and percentiles are defined).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from sloserve_operator.load_client import LoadClient, RequestResult, make_prompt, percentile
from sloserve_operator.local.workload import Arrival


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


ProgressCallback = Callable[[float, list[RequestResult]], None]


async def run_load(url: str, model: str, arrivals: list[Arrival], *, seed: int = 0,
                   request_timeout: float = 300.0, max_in_flight: int = 512, extra: dict | None = None,
                   on_progress: ProgressCallback | None = None, progress_every: float = 5.0,
                   stop: asyncio.Event | None = None) -> LoadReport:
    """Send every arrival at its time (bounded by `max_in_flight`); return when all have finished."""
    url = url.rstrip("/")
    results: list[RequestResult] = []
    limit = asyncio.Semaphore(max_in_flight)
    start = time.perf_counter()

    async def fire(index: int, arrival: Arrival) -> None:
        async with limit:
            result = RequestResult(index=index, sent_at=time.perf_counter() - start,
                                   prompt_tokens=arrival.prompt_tokens)
            results.append(result)
            await client.complete(make_prompt(index, arrival.prompt_tokens, seed), arrival.max_tokens, result,
                                  extra)

    async def report() -> None:
        while True:
            await asyncio.sleep(progress_every)
            if on_progress:
                on_progress(time.perf_counter() - start, results)

    async with LoadClient(url, model, request_timeout) as client:
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
