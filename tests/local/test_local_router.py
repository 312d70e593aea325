"""The router against real HTTP backends on loopback (small aiohttp apps standing in for replicas)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from sloserve_operator.local.replicas import free_port
from sloserve_operator.local.router import Router

from local.stub_replica import StubReplica

pytestmark = pytest.mark.timeout(60)


async def collect(session: aiohttp.ClientSession, url: str, prompt: str = "p") -> tuple[int, list[str]]:
    async with session.post(url + "/v1/completions", json={"prompt": prompt, "stream": True}) as response:
        if response.status != 200:
            return response.status, [await response.text()]
        return 200, [line.decode().strip() async for line in response.content if line.strip()]


async def started(policy: str | None = None) -> Router:
    port = free_port()
    router = Router() if policy is None else Router(policy=policy)
    await router.start("127.0.0.1", port)
    router.url = f"http://127.0.0.1:{port}"
    return router


@pytest.fixture
async def router():
    router = await started()
    yield router
    await router.stop()


@pytest.fixture
async def least_outstanding_router():
    """The default router weighs queued prefill first, so which of two busy replicas takes a request depends
    on which has sent its first bytes yet; fewest-in-flight makes the balancing test's split exact."""
    router = await started("least-outstanding")
    yield router
    await router.stop()


async def test_least_outstanding_balancing_and_streaming_through(least_outstanding_router: Router) -> None:
    router = least_outstanding_router
    a, b, c = [await StubReplica(name).start() for name in "abc"]
    try:
        router.add("a", a.url)
        router.add("b", b.url)
        a.release.clear()
        b.release.clear()
        async with aiohttp.ClientSession() as session:
            held = [asyncio.create_task(collect(session, router.url, f"held-{i}")) for i in range(4)]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20  # bounded: until all four are in flight and both stubs are streaming
            while loop.time() < deadline and not (
                    router.outstanding("a") + router.outstanding("b") == 4
                    and a.first_chunk_sent.is_set() and b.first_chunk_sent.is_set()):
                await asyncio.sleep(0.05)
            assert (router.outstanding("a"), router.outstanding("b")) == (2, 2)
            # A chunk reaches the client while the backend still holds the rest: streamed, not buffered.
            assert a.first_chunk_sent.is_set() and b.first_chunk_sent.is_set()
            router.add("c", c.url)
            status, lines = await asyncio.wait_for(collect(session, router.url, "fresh"), 20)
            assert status == 200 and lines[0].startswith("data: ") and "c-0" in lines[0] and lines[-1] == "data: [DONE]"
            a.release.set()
            b.release.set()
            results = await asyncio.wait_for(asyncio.gather(*held), 20)
        assert all(status == 200 and lines[-1] == "data: [DONE]" for status, lines in results)
        assert (a.seen, b.seen, c.seen) == (2, 2, 1)
        assert router.failures_total == 0
    finally:
        for backend in (a, b, c):
            await backend.stop()


async def test_refused_backend_is_skipped_and_no_backend_is_a_503(router: Router) -> None:
    alive = await StubReplica("alive").start()
    try:
        async with aiohttp.ClientSession() as session:
            status, body = await collect(session, router.url)
            assert status == 503 and json.loads(body[0])["error"]["message"] == "no serving replica is ready"
            router.add("dead", f"http://127.0.0.1:{free_port()}")  # nothing listens there
            router.add("alive", alive.url)
            results = await asyncio.gather(*(collect(session, router.url) for _ in range(6)))
            assert all(status == 200 for status, _ in results)
            assert alive.seen == 6
            router.accepting = False
            status, body = await collect(session, router.url)
            assert status == 503 and "shutting down" in body[0]
    finally:
        await alive.stop()


async def test_removed_backend_finishes_its_requests_before_wait_idle_returns(router: Router) -> None:
    backend = await StubReplica("x").start()
    try:
        router.add("x", backend.url)
        backend.release.clear()
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(collect(session, router.url))
            await asyncio.wait_for(backend.first_chunk_sent.wait(), timeout=10)
            router.remove("x")
            assert router.outstanding("x") == 1
            waiter = asyncio.create_task(router.wait_idle("x", timeout=10))
            await asyncio.sleep(0.2)
            assert not waiter.done()
            backend.release.set()
            assert await waiter is True
            status, lines = await request
        assert status == 200 and lines[-1] == "data: [DONE]"
        assert "x" not in router.snapshot()["backends"]
    finally:
        await backend.stop()
