"""The local stand-in for the Service: one OpenAI-compatible endpoint in front of the serving replicas.

Which serving backend takes a request is a routing policy's pick (sloserve_operator.routing; default
prefix-scorer, the simulator's winner: least prefill work ahead counting what the backend is expected to
hold of the prompt's prefix, within a bound on requests in flight; "least-outstanding" is the old choice).
The prompt's prefix is read from the JSON body (messages or prompt) as chained text-block hashes; a
request's prompt counts as queued prefill on its backend until the first response bytes come back.
Responses stream through chunk by chunk, so SSE token timing reaches the client unchanged. A backend that
refuses the connection is skipped and the request tried on the next; so is one that answers 429 (its
admission control expects the request to miss its TTFT budget there, server/admission.py) while another
backend is left to try; when every backend refused, the last 429 (Retry-After, OpenAI error body) is passed
through. Once a response has started it is passed on as is. Removing a backend (demotion, scale-down) stops new requests at once; `wait_idle` lets the
controller wait for its in-flight requests before stopping the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from sloserve_operator.local.prompt_text import prompt_text
from sloserve_operator.routing import Candidate, RouteRequest, route_request_from_text
from sloserve_operator.routing import Router as RoutingPolicy

log = logging.getLogger("sloserve.local.router")

FORWARDED_HEADERS = ("Content-Type", "Content-Encoding", "Cache-Control", "Retry-After")


@dataclass
class Backend:
    name: str
    url: str
    outstanding: int = 0
    served: int = 0
    added_at: float = 0.0
    first_request_at: float | None = None  # when this backend got its first request since it was added
    queued_prefill_tokens: int = 0  # estimated prompt tokens sent here whose response has not started


class BackendRefused(Exception):
    """A backend answered 429 and another backend is left to try."""


def openai_error(status: int, message: str, error_type: str = "service_unavailable") -> web.Response:
    return web.json_response({"error": {"message": message, "type": error_type, "param": None, "code": status}},
                             status=status)


DEFAULT_POLICY = "prefix-scorer"
DEFAULT_CACHE_TOKENS = (1 << 30) // 23_040  # the runtime's CPU KV pool for SmolLM2-135M (1 GiB)


class Router:
    """Reverse proxy over a changing set of serving backends; a routing policy picks the backend."""

    def __init__(self, *, connect_timeout: float = 5.0,
                 on_first_request: Callable[[str, float], None] | None = None,
                 policy: str = DEFAULT_POLICY, cache_tokens: float = DEFAULT_CACHE_TOKENS) -> None:
        self.on_first_request = on_first_request  # (backend, time): a newly added backend got traffic
        self.policy = RoutingPolicy(policy, capacity_tokens=cache_tokens)
        self.backends: dict[str, Backend] = {}
        self.retired: dict[str, Backend] = {}  # removed but maybe still finishing requests
        self.requests_total = 0
        self.failures_total = 0
        self.refusals_total = 0  # 429s from backends, retried elsewhere or passed through
        self.accepting = True  # False once `sloserve up` is shutting down: new requests get 503
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/health", self._health)
        self.app.router.add_get("/ready", self._ready)
        self.app.router.add_get("/router/backends", self._list_backends)
        self.app.router.add_route("*", "/{tail:.*}", self._forward)

    # ------------------------------------------------------------ the serving set

    def add(self, name: str, url: str) -> None:
        if name not in self.backends:
            backend = self.retired.pop(name, None)
            if backend is None:  # a new process: whatever the policy remembered of a namesake is gone
                backend = Backend(name, url)
                self.policy.forget(name)
            backend.url, backend.added_at, backend.first_request_at = url, time.time(), None
            self.backends[name] = backend
            log.info("router: %s (%s) now serving", name, url)

    def remove(self, name: str) -> None:
        backend = self.backends.pop(name, None)
        if backend is not None:
            self.retired[name] = backend
            log.info("router: %s no longer serving (%d in flight)", name, backend.outstanding)

    def outstanding(self, name: str) -> int:
        backend = self.backends.get(name) or self.retired.get(name)
        return backend.outstanding if backend else 0

    async def wait_idle(self, name: str, timeout: float) -> bool:
        """Wait (bounded) until `name` has no request in flight; True if it got there."""
        deadline = time.monotonic() + timeout
        while self.outstanding(name) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        idle = self.outstanding(name) == 0
        if name not in self.backends:
            self.retired.pop(name, None)
        return idle

    def pick(self, exclude: set[str], request: RouteRequest | None = None) -> Backend | None:
        backends = [b for name, b in self.backends.items() if name not in exclude]
        if not backends:
            return None
        candidates = [Candidate(b.name, b.outstanding, b.queued_prefill_tokens) for b in backends]
        return backends[self.policy.choose(candidates, request or RouteRequest(1))]

    def snapshot(self) -> dict:
        return {
            "requests_total": self.requests_total,
            "failures_total": self.failures_total,
            "refusals_total": self.refusals_total,
            "backends": {name: {"url": b.url, "outstanding": b.outstanding, "served": b.served,
                                "added_at": b.added_at, "first_request_at": b.first_request_at}
                         for name, b in self.backends.items()},
        }

    # ------------------------------------------------------------ handlers

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _ready(self, request: web.Request) -> web.Response:
        if self.backends:
            return web.json_response({"status": "ready", "serving": len(self.backends)})
        return openai_error(503, "no serving replica is ready yet")

    async def _list_backends(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return openai_error(503, "local mode is shutting down")
        self.requests_total += 1
        body = await request.read()
        headers = {key: value for key, value in request.headers.items()
                   if key.lower() in ("content-type", "accept", "authorization")}
        route = route_request_from_text(prompt_text(body))
        tried: set[str] = set()
        while True:
            backend = self.pick(tried, route)
            if backend is None:
                self.failures_total += 1
                reason = "no serving replica is ready" if not tried else "every serving replica refused the connection"
                return openai_error(503, reason)
            tried.add(backend.name)
            backend.outstanding += 1
            queued = [route.prompt_tokens]  # until the response starts (_proxy clears it)
            backend.queued_prefill_tokens += queued[0]
            if backend.first_request_at is None:
                backend.first_request_at = time.time()
                if self.on_first_request:
                    self.on_first_request(backend.name, backend.first_request_at)
            can_retry = any(name not in tried for name in self.backends)
            try:
                return await self._proxy(request, backend, body, headers, queued, can_retry)
            except BackendRefused:
                log.debug("router: %s refused a request (429); trying another replica", backend.name)
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as error:
                if getattr(error, "_started", False):
                    raise
                log.warning("router: %s refused a request (%s); trying another replica", backend.name, error)
            finally:
                backend.outstanding -= 1
                backend.queued_prefill_tokens -= queued[0]

    async def _proxy(self, request: web.Request, backend: Backend, body: bytes,
                     headers: dict[str, str], queued: list[int], can_retry: bool) -> web.StreamResponse:
        session = self._client()
        url = backend.url + request.rel_url.path_qs
        async with session.request(request.method, url, data=body or None, headers=headers) as upstream:
            if upstream.status == 429:
                self.refusals_total += 1
                if can_retry:
                    raise BackendRefused(backend.name)
            response = web.StreamResponse(
                status=upstream.status,
                headers={key: upstream.headers[key] for key in FORWARDED_HEADERS if key in upstream.headers},
            )
            await response.prepare(request)
            backend.served += 1
            if upstream.status >= 500:
                self.failures_total += 1
            try:
                async for chunk in upstream.content.iter_any():
                    backend.queued_prefill_tokens -= queued[0]  # the first bytes: prefill is done
                    queued[0] = 0
                    try:
                        await response.write(chunk)
                    except ConnectionResetError:
                        return response  # the client left; leaving the block aborts the upstream request
            except aiohttp.ClientError as error:
                error._started = True  # type: ignore[attr-defined]  # never retry a half-sent response
                self.failures_total += 1
                raise
            try:
                await response.write_eof()
            except ConnectionResetError:
                pass
            return response

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                auto_decompress=False,
            )
        return self._session

    # ------------------------------------------------------------ lifecycle

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def drain(self, timeout: float) -> bool:
        """Wait (bounded) for every in-flight request to finish; True if none is left."""
        deadline = time.monotonic() + timeout
        def in_flight() -> int:
            return sum(b.outstanding for b in (*self.backends.values(), *self.retired.values()))
        while in_flight() > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return in_flight() == 0

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
