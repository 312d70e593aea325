"""What every protocol front end (OpenAI HTTP, KServe v2 HTTP, Triton gRPC) shares: the server's phase
(loading, ready, draining), admission (503 / 429), prompt checks, in-flight accounting for the SIGTERM
drain, and driving the engine's output stream so that an abandoned request is aborted at once.

Rejections are raised as `Rejected`, protocol-neutral; each front end maps them to its own error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from sloserve_runtime.engine.sampling_params import InvalidParameter, SamplingParams
from sloserve_runtime.server.admission import AdmissionGate
from sloserve_runtime.server.metrics import RuntimeMetrics

Job = tuple[str, list[int], SamplingParams]  # (request id, prompt ids, params): one engine request
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code; clients test it to trim the history


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class Rejected(Exception):
    """A request refused before or while it runs; `kind` picks the status code in every protocol."""

    STATUS = {"invalid": 400, "unknown_model": 404, "overloaded": 429, "unavailable": 503, "internal": 500}

    def __init__(self, kind: str, message: str, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    @property
    def status(self) -> int:
        return self.STATUS[self.kind]

    @classmethod
    def invalid(cls, param: str | None, message: str, code: str | None = None) -> Rejected:
        return cls("invalid", message, param=param, code=code)

    @classmethod
    def from_invalid_parameter(cls, error: InvalidParameter) -> Rejected:
        return cls("invalid", str(error), param=error.param)


@dataclass
class ServerOptions:
    host: str = "0.0.0.0"
    port: int = 8000
    grpc_port: int = 0  # 0: no gRPC server
    max_queue: int = 1024  # waiting requests beyond this get 429
    drain_timeout: float = 30.0  # seconds to finish in-flight requests after SIGTERM
    slo_ttft_ms: float | None = None
    slo_itl_ms: float | None = None
    log_level: str = "info"
    retry_after_seconds: int = 1
    admission_limit_ms: float | None = None  # refuse when the expected TTFT exceeds this (None: never)


@dataclass
class Completion:
    """A whole (non-streamed) generation."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


class Frontend:
    """Shared serving state; the engine is attached once loaded and warmed up."""

    def __init__(self, options: ServerOptions, metrics: RuntimeMetrics) -> None:
        self.options = options
        self.metrics = metrics
        self.phase = Phase.LOADING
        self.engine: Any = None
        self.failure: str | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        limit = options.admission_limit_ms / 1000.0 if options.admission_limit_ms else None
        self.admission = AdmissionGate(limit)

    # -- phase and admission -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.phase is Phase.READY

    @property
    def model_name(self) -> str:
        return self.engine.model_name if self.engine is not None else ""

    def require_ready(self) -> Any:
        """The engine, or a 503 that says why there is none to use."""
        if self.phase is Phase.READY:
            return self.engine
        reasons = {Phase.LOADING: ("The model is still loading; retry shortly.", "loading"),
                   Phase.DRAINING: ("The server is shutting down and takes no new requests.", "draining"),
                   Phase.FAILED: (f"The model failed to load: {self.failure}", "load_failed")}
        message, code = reasons[self.phase]
        raise Rejected("unavailable", message, code=code, retry_after=self.options.retry_after_seconds)

    def check_model(self, name: str | None, param: str = "model") -> None:
        if name is not None and name != self.model_name:
            raise Rejected("unknown_model", f"The model '{name}' does not exist; this server serves "
                           f"'{self.model_name}'.", param=param, code="model_not_found")

    def check_queue(self, jobs: list[Job]) -> None:
        """Admit `jobs` or refuse them with 429: when the engine's waiting queue is at --max-queue, or when
        their expected time to first token (prefill admitted ahead plus theirs and the sequences running,
        through the model fitted to observed TTFTs; admission.py) exceeds --admission-limit-ms. Admitted jobs enter the admission ledger."""
        if self.engine.num_waiting >= self.options.max_queue:
            self.metrics.refused("queue_full")
            raise Rejected("overloaded", f"Too many requests waiting ({self.engine.num_waiting}, limit "
                           f"{self.options.max_queue}); retry later.", code="rate_limit_exceeded",
                           retry_after=self.options.retry_after_seconds)
        tokens = sum(len(prompt_ids) for _, prompt_ids, _ in jobs)
        running = self.engine.num_running
        expected = self.admission.over_limit(tokens, running)
        if expected is not None:
            limit = self.admission.limit_seconds or 0.0
            self.metrics.refused("slo")
            raise Rejected("overloaded", f"The server cannot start this request within its latency budget: "
                           f"expected time to first token {expected:.2f}s, admission limit {limit:.2f}s "
                           f"({self.admission.pending_requests} requests ahead); retry later.",
                           code="rate_limit_exceeded",
                           retry_after=max(self.options.retry_after_seconds, math.ceil(expected - limit)))
        for request_id, prompt_ids, _ in jobs:
            self.admission.admit(request_id, len(prompt_ids), running)

    # -- prompts -------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return list(self.engine.tokenizer.encode(text))

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        tokenizer = self.engine.tokenizer
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        except Exception as error:  # a template can reject a role order; that is the client's input
            raise Rejected.invalid("messages", f"The chat template rejected the messages: {error}") from error
        return list(tokenizer.encode(text))

    def check_token_ids(self, ids: list[int], param: str) -> None:
        vocab = self.engine.tokenizer.vocab_size
        for token in ids:
            if not 0 <= token < vocab:
                raise Rejected.invalid(param, f"Token id {token} is outside the vocabulary (0..{vocab - 1}).")

    def check_sampling_token_ids(self, params: SamplingParams) -> None:
        self.check_token_ids(list(params.logit_bias), "logit_bias")
        self.check_token_ids(params.stop_token_ids, "stop_token_ids")

    def resolve_max_tokens(self, prompt_len: int, requested: int | None, default: int | None,
                           param: str = "max_tokens", prompt_param: str = "prompt") -> int:
        """Check the prompt against max_model_len and pick max_tokens (None default: all that fits)."""
        limit = self.engine.max_model_len
        if prompt_len == 0:
            raise Rejected.invalid(prompt_param, "The prompt is empty.")
        if prompt_len >= limit:
            raise Rejected.invalid(prompt_param, f"The prompt has {prompt_len} tokens; this model's maximum "
                                   f"context length is {limit} tokens (prompt plus output).",
                                   code=CONTEXT_LENGTH_EXCEEDED)
        if requested is not None and requested <= 0:
            raise Rejected.invalid(param, f"{param} must be at least 1, got {requested}.")
        room = limit - prompt_len
        if requested is None:
            return min(default, room) if default is not None else room
        if requested > room:
            raise Rejected.invalid(param, f"{param}={requested} plus the prompt's {prompt_len} tokens exceeds "
                                   f"this model's maximum context length of {limit} tokens.",
                                   code=CONTEXT_LENGTH_EXCEEDED)
        return requested

    def validated(self, params: SamplingParams) -> SamplingParams:
        try:
            params.validate()
        except InvalidParameter as error:
            raise Rejected.from_invalid_parameter(error) from error
        self.check_sampling_token_ids(params)
        return params

    @staticmethod
    def new_request_id(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"

    # -- in-flight accounting (the SIGTERM drain waits for zero) -----------------------------------------

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()

    @property
    def inflight(self) -> int:
        return self._inflight

    async def wait_idle(self, timeout: float) -> bool:
        """True when every in-flight request finished within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # -- driving the engine --------------------------------------------------------------------------

    async def stream(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> AsyncIterator:
        """The engine's outputs; leaving early (break, cancel, close) closes the engine's generator, which
        aborts the request and frees its KV blocks."""
        outputs = self.engine.generate(request_id, prompt_ids, params)
        try:
            async for output in outputs:
                self.admission.first_token(request_id)  # only the first output finds it in the ledger
                yield output
        except InvalidParameter as error:  # a check only the engine can make (it knows the vocabulary)
            raise Rejected.from_invalid_parameter(error) from error
        finally:
            self.admission.release(request_id)
            await outputs.aclose()

    async def complete(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> Completion:
        result = Completion(prompt_tokens=len(prompt_ids))
        parts: list[str] = []
        async for output in self.stream(request_id, prompt_ids, params):
            parts.append(output.new_text)
            result.token_ids.extend(output.new_token_ids)
            result.prompt_tokens = output.prompt_tokens
            result.completion_tokens = output.completion_tokens
            result.cached_tokens = output.cached_tokens
            if output.finished:
                result.finish_reason = output.finish_reason
        result.text = "".join(parts)
        return result


async def merge_streams(streams: list[AsyncIterator]) -> AsyncIterator[tuple[int, Any]]:
    """Interleave several async iterators as (index, item) in arrival order; closing the merged stream
    cancels (and so aborts) every source."""
    if len(streams) == 1:  # the common case: no tasks, no queue hop per token
        async with contextlib.aclosing(streams[0]) as only:  # closed now, not whenever GC gets to it
            async for item in only:
                yield 0, item
        return
    queue: asyncio.Queue[tuple[int, Any, BaseException | None, bool]] = asyncio.Queue()

    async def pump(index: int, source: AsyncIterator) -> None:
        try:
            async for item in source:
                await queue.put((index, item, None, False))
        except Exception as error:  # handed to the consumer, which re-raises it
            await queue.put((index, None, error, True))
            return
        await queue.put((index, None, None, True))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item, error, done = await queue.get()
            if error is not None:
                raise error
            if done:
                remaining -= 1
                continue
            yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
