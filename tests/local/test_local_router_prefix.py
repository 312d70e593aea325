"""Local mode's router sends requests sharing a prompt prefix to the replica that served the prefix (the
prefix-scorer pick), while requests in flight keep the load spread; routing decisions, not timings."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from sloserve_operator.local.replicas import free_port
from sloserve_operator.local.router import Router

from local.stub_replica import StubReplica

pytestmark = pytest.mark.timeout(60)


def conversation(topic: str, turns: int) -> str:
    """A long shared history (well past a few 64-character blocks) then this turn's question."""
    history = " ".join(f"{topic} fact {i} is worth remembering." for i in range(40))
    return f"{history} Question {turns} about {topic}?"


async def send(session: aiohttp.ClientSession, url: str, text: str) -> int:
    async with session.post(url + "/v1/chat/completions",
                            json={"messages": [{"role": "user", "content": text}], "stream": True}) as response:
        await response.read()
        return response.status


async def wait_until(condition, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def route_conversations(policy: str) -> dict[str, set[str]]:
    """Three conversations, four turns each; every request held open until the end. Returns, per
    conversation, the replicas its turns went to."""
    replicas = [await StubReplica(name).start() for name in "abc"]
    router = Router(policy=policy)
    port = free_port()
    await router.start("127.0.0.1", port)
    url = f"http://127.0.0.1:{port}"
    try:
        for replica in replicas:
            router.add(replica.name, replica.url)
            replica.release.clear()
        tasks = []
        async with aiohttp.ClientSession() as session:
            for turn in range(4):
                topics = ("astronomy", "botany", "cooking")
                for topic in topics[turn % 3:] + topics[:turn % 3]:  # a different order each turn
                    tasks.append(asyncio.create_task(send(session, url, conversation(topic, turn))))
                    sent = len(tasks)
                    await wait_until(lambda sent=sent: sum(len(r.prompts) for r in replicas) == sent)
            for replica in replicas:
                replica.release.set()
            assert all(status == 200 for status in await asyncio.gather(*tasks))
    finally:
        await router.stop()
        for replica in replicas:
            await replica.stop()
    placement: dict[str, set[str]] = {}
    for replica in replicas:
        for prompt in replica.prompts:
            topic = prompt.split(" ", 1)[0]
            placement.setdefault(topic, set()).add(replica.name)
    return placement


async def test_same_prefix_goes_to_the_same_replica_and_conversations_spread() -> None:
    placement = await route_conversations("prefix-scorer")
    assert set(placement) == {"astronomy", "botany", "cooking"}
    assert all(len(names) == 1 for names in placement.values()), placement  # each conversation sticks
    assert len(set().union(*placement.values())) == 3, placement  # and they are spread over the replicas


async def test_least_outstanding_scatters_the_same_conversations() -> None:
    """The contrast that makes the test above mean something: without prefix awareness the turns of a
    conversation land on whichever replica has fewest requests in flight."""
    placement = await route_conversations("least-outstanding")
    assert any(len(names) > 1 for names in placement.values()), placement
