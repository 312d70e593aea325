"""The runtime server: app factory and lifecycle.

Lifecycle: the HTTP (and gRPC) listeners come up first, so /health answers and every other endpoint says
503 "loading" while the weights load in a background thread; /ready turns 200 once the engine has run a
warm-up step. SIGTERM (or SIGINT) starts a drain: new requests get 503, /ready goes 503 so load balancers
stop routing, in-flight requests run to completion within --drain-timeout (then whatever is left is
aborted), and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from sloserve_runtime.engine.compute_thread import ComputeThread
from sloserve_runtime.engine.engine_config import EngineConfig
from sloserve_runtime.engine.observer import EngineObserver
from sloserve_runtime.server.admission import CALIBRATION_PROMPT_TOKENS
from sloserve_runtime.server.frontend import Frontend, Phase, ServerOptions
from sloserve_runtime.server.kserve import kserve_router
from sloserve_runtime.server.metrics import RuntimeMetrics
from sloserve_runtime.server.openai_api import http_error_body, openai_router

log = logging.getLogger("sloserve_runtime.server.app")

EngineLoader = Callable[[EngineConfig, EngineObserver], Any]


def load_real_engine(config: EngineConfig, observer: EngineObserver) -> Any:
    from sloserve_runtime.engine.core import AsyncEngine  # heavy (torch); only when actually serving

    return AsyncEngine.from_config(config, observer=observer)


class InflightMiddleware:
    """Counts generation requests (POST) for the whole life of their response, streamed bodies included,
    so the SIGTERM drain knows when the last one has finished."""

    def __init__(self, app: Any, frontend: Frontend) -> None:
        self.app = app
        self.frontend = frontend

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        with self.frontend.track():
            await self.app(scope, receive, send)


async def protocol_http_error(request: Request, error: Exception) -> Response:
    """Routing's own errors (no such path: 404; a path that takes other methods: 405, with `Allow`) in the
    error shape of the protocol the path belongs to; clients of each parse only their own."""
    assert isinstance(error, HTTPException)
    path, headers = request.url.path, dict(error.headers or {})
    if path == "/v1" or path.startswith("/v1/"):
        body = http_error_body(request.method, path, error.status_code, headers.get("Allow"))
        return JSONResponse(body, status_code=error.status_code, headers=headers)
    if path == "/v2" or path.startswith("/v2/"):
        return JSONResponse({"error": f"{request.method} {path}: {error.detail}"}, status_code=error.status_code,
                            headers=headers)
    return await http_exception_handler(request, error)


def create_app(frontend: Frontend) -> FastAPI:
    app = FastAPI(title="sloserve-runtime", docs_url=None, redoc_url=None, openapi_url=None,
                  exception_handlers={HTTPException: protocol_http_error})
    app.add_middleware(InflightMiddleware, frontend=frontend)

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "alive", "phase": frontend.phase.value})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": frontend.ready, "phase": frontend.phase.value},
                            status_code=200 if frontend.ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        engine = frontend.engine
        if engine is not None:  # gauges as of now, not as of the last step (the engine idles between bursts)
            frontend.metrics.on_step(engine.num_running, engine.num_waiting, engine.kv_cache_usage)
        return Response(frontend.metrics.render(), media_type=frontend.metrics.content_type)

    @app.get("/debug/engine")
    async def engine_state() -> JSONResponse:
        """KV-block and queue counters (tests use it to check that aborted requests free their blocks)."""
        engine = frontend.engine
        if engine is None:
            return JSONResponse({"phase": frontend.phase.value}, status_code=503)
        return JSONResponse({"phase": frontend.phase.value, "num_running": engine.num_running,
                             "num_waiting": engine.num_waiting, "num_free_blocks": engine.num_free_blocks,
                             "num_total_blocks": engine.num_total_blocks,
                             "kv_cache_usage": engine.kv_cache_usage, "inflight": frontend.inflight,
                             "admission": frontend.admission.state()})

    app.include_router(openai_router(frontend))
    app.include_router(kserve_router(frontend))
    return app


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: SIGTERM means "drain" here, which the Runtime owns."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def calibrate_prefill_rate(engine: Any) -> float:
    """Prompt tokens per second of one lone prefill, the admission gate's starting rate (admission.py):
    without it the first burst after start-up would be admitted blind. Two prefills, the second measured:
    the first of a new prompt length pays one-off costs; each starts with a different token, so neither
    finds the other's blocks in the prefix cache."""
    from sloserve_runtime.engine.sampling_params import SamplingParams

    text = "Calibrating the prefill rate of this replica before it serves. " * 64
    length = max(min(CALIBRATION_PROMPT_TOKENS, engine.max_model_len // 2), 1)
    ids = list(engine.tokenizer.encode(text))[:length - 1]
    params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    rate = 0.0
    for first_token in (1, 2):
        prompt = [first_token, *ids]
        started = time.monotonic()
        async for _ in engine.generate(f"calibrate-{time.monotonic_ns()}", prompt, params):
            pass
        rate = len(prompt) / max(time.monotonic() - started, 1e-6)
    return rate


class Runtime:
    """One serving process: listeners, the engine, and the drain on SIGTERM."""

    def __init__(self, config: EngineConfig, options: ServerOptions,
                 load_engine: EngineLoader = load_real_engine) -> None:
        self.config = config
        self.options = options
        self.load_engine = load_engine
        self.metrics = RuntimeMetrics(config.served_model_name or "", options.slo_ttft_ms, options.slo_itl_ms)
        self.frontend = Frontend(options, self.metrics)
        self.app = create_app(self.frontend)
        self._stop = asyncio.Event()
        self.http: _Uvicorn | None = None
        self._engine_to_stop: Any = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, handle_signals: bool = True) -> int:
        """Serve until a stop signal; returns the process exit code."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        self.http = _Uvicorn(uvicorn.Config(self.app, host=self.options.host, port=self.options.port,
                                            log_level=self.options.log_level, lifespan="off",
                                            access_log=False, timeout_graceful_shutdown=5))
        http_task = asyncio.create_task(self.http.serve(), name="http")
        grpc = None
        if self.options.grpc_port:
            from sloserve_runtime.server.grpc_server import start_grpc_server

            grpc = await start_grpc_server(self.frontend, self.options.host, self.options.grpc_port)
        load_task = asyncio.create_task(self._load(), name="load")
        stop_task = asyncio.create_task(self._stop.wait(), name="stop")
        exit_code = 0
        try:
            done, _ = await asyncio.wait({http_task, load_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if load_task in done and load_task.exception() is None and not stop_task.done():
                done, _ = await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if http_task in done:
                log.error("the HTTP server stopped unexpectedly")
                exit_code = 1
            elif load_task in done and load_task.exception() is not None:
                exit_code = 1
            else:
                await self._drain()
        finally:
            load_task.cancel()
            stop_task.cancel()
            self.http.should_exit = True
            with contextlib.suppress(BaseException):
                await http_task
            if grpc is not None:
                await grpc.stop(grace=1.0)
            await self._stop_engine()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        log.info("exiting with code %d", exit_code)
        return exit_code

    async def _load(self) -> None:
        try:
            # Load on the thread that will run every step (compute_thread.py says why).
            compute = ComputeThread("sloserve-engine")
            engine = await compute.call(lambda: self.load_engine(self.config, self.metrics))
            self.metrics.bind(engine.model_name)
            weight_bytes = getattr(engine, "weight_bytes", None)
            if isinstance(weight_bytes, int):
                self.metrics.set_weight_bytes(weight_bytes)
            self.frontend.engine = engine
            self._engine_to_stop = engine
            await engine.start()
            await engine.warmup()
            if self.options.admission_limit_ms:
                self.frontend.admission.calibrate(await calibrate_prefill_rate(engine),
                                                  tokens=max(min(CALIBRATION_PROMPT_TOKENS, engine.max_model_len // 2), 1))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.frontend.failure = f"{type(error).__name__}: {error}"
            self.frontend.phase = Phase.FAILED
            if isinstance(error, OSError | ValueError):  # a bad path or setting: the message says it all
                log.error("loading the model failed: %s", self.frontend.failure)
            else:
                log.exception("loading the model failed")
            raise
        if self.frontend.phase is Phase.LOADING:
            self.frontend.phase = Phase.READY
            log.info("ready: serving %s (max_model_len %d)", engine.model_name, engine.max_model_len)

    async def _drain(self) -> None:
        self.frontend.phase = Phase.DRAINING
        timeout = self.options.drain_timeout
        log.info("draining: %d request(s) in flight, up to %.1fs", self.frontend.inflight, timeout)
        if await self.frontend.wait_idle(timeout):
            log.info("drained")
            return
        log.warning("drain timeout: aborting %d request(s) still in flight", self.frontend.inflight)
        await self._stop_engine()  # aborts what is left; their streams end with finish_reason "abort"
        await self.frontend.wait_idle(5.0)

    async def _stop_engine(self) -> None:
        engine, self._engine_to_stop = self._engine_to_stop, None
        if engine is not None:
            await engine.shutdown()
