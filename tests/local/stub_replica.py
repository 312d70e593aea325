"""A stand-in replica for the router tests: a small aiohttp app on loopback serving /v1/completions and
/v1/chat/completions as a streaming replica would. It records each prompt, streams `chunks` SSE events
(`<name>-<i>`) and holds the response open after each until `release` is set, so requests stay in flight."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from sloserve_operator.local.replicas import free_port


class StubReplica:
    def __init__(self, name: str, chunks: int = 3) -> None:
        self.name, self.chunks = name, chunks
        self.prompts: list[str] = []  # completions: the prompt; chat: the last message's content
        self.release = asyncio.Event()
        self.release.set()
        self.first_chunk_sent = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def seen(self) -> int:
        return len(self.prompts)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.prompts.append(body["prompt"])
        return await self._stream(request, {"prompt": body["prompt"]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.prompts.append(body["messages"][-1]["content"])
        return await self._stream(request, {})

    async def _stream(self, request: web.Request, extra: dict) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(self.chunks):
            chunk = {"choices": [{"text": f"{self.name}-{index}"}], **extra}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.first_chunk_sent.set()
            await self.release.wait()
        await response.write(b"data: [DONE]\n\n")
        return response

    async def start(self) -> StubReplica:
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        # Release what is held first: a stopping server waits (60 s) for its handlers, which would hide a
        # test's failed assertion behind the test's timeout.
        self.release.set()
        await self.runner.cleanup()
