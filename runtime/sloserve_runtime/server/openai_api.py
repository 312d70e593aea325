"""OpenAI-compatible API: /v1/completions, /v1/chat/completions, /v1/models.

Requests are parsed by hand (not by FastAPI's body injection) so every failure, malformed JSON included,
gets OpenAI's error body {"error": {"message", "type", "param", "code"}}, and so the request's receive
channel stays free to notice a client that hangs up on a non-streamed request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.server.frontend import Completion, Frontend, Rejected, merge_streams

ModelT = TypeVar("ModelT", bound=BaseModel)

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to "all that fits"

ERROR_TYPES = {400: "invalid_request_error", 429: "rate_limit_error", 500: "internal_server_error",
               503: "service_unavailable_error"}


# -- request models ---------------------------------------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields both endpoints share: OpenAI's, plus vLLM's top_k, ignore_eos, min_tokens, stop_token_ids."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str
    max_tokens: int | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0)] = 0
    n: Literal[1] | None = 1  # null: clients that serialize every field send their unset ones as null
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: Literal[0, 0.0] | None = None
    frequency_penalty: Literal[0, 0.0] | None = None
    user: str | None = None

    def sampling_params(self, frontend: Frontend, max_tokens: int) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        bias: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            try:
                bias[int(key)] = value
            except ValueError as error:
                raise Rejected.invalid("logit_bias", f"logit_bias keys must be token ids, got {key!r}.") from error
        top_k = self.top_k if self.top_k not in (None, 0) else -1
        params = SamplingParams(max_tokens=max_tokens, temperature=1.0 if self.temperature is None else self.temperature,
                                top_p=1.0 if self.top_p is None else self.top_p, top_k=top_k, seed=self.seed,
                                stop=stop, stop_token_ids=list(self.stop_token_ids or []), logit_bias=bias,
                                ignore_eos=self.ignore_eos, min_tokens=self.min_tokens)
        return frontend.validated(params)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: Literal[False] | None = False
    logprobs: None = None
    suffix: None = None
    best_of: Literal[1] | None = None


class ContentPart(BaseModel):
    """Any part type parses, so an image or audio part gets a 400 that says so, not a type mismatch."""

    model_config = ConfigDict(extra="ignore", strict=True)
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: str
    content: str | list[ContentPart] | None = None

    def as_template_input(self) -> dict[str, str]:
        content = self.content
        if isinstance(content, list):
            for part in content:
                if part.type != "text" or part.text is None:
                    raise Rejected.invalid("messages", f"Content parts of type '{part.type}' are not supported; "
                                           "this model takes text parts only.")
            content = "".join(part.text or "" for part in content)
        # OpenAI's newer name for the system role; chat templates only know "system".
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: str


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: int | None = None
    logprobs: Literal[False] | None = None
    top_logprobs: Literal[0] | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None  # the deprecated form of tools
    function_call: str | dict[str, Any] | None = None

    def check_supported(self) -> None:
        """Refuse what this server would otherwise drop silently: the client would take plain text for a
        tool call or for JSON. Empty tools, tool_choice "none" and response_format "text" ask for nothing."""
        if self.response_format is not None and self.response_format.type != "text":
            raise Rejected.invalid("response_format", f"response_format '{self.response_format.type}' is not "
                                   "supported; this server only returns free text.")
        for tools, choice, name in ((self.tools, self.tool_choice, "tools"),
                                    (self.functions, self.function_call, "functions")):
            if tools and choice != "none":
                raise Rejected.invalid(name, "Tool calling is not supported by this server; send the request "
                                       f"without '{name}'.")
            if not tools and choice not in (None, "none", "auto"):
                raise Rejected.invalid(name, f"A tool choice of {choice!r} needs '{name}', and tool calling is "
                                       "not supported by this server.")


# -- errors -----------------------------------------------------------------------------------------------

def error_response(error: Rejected, unknown_model_status: int = 400) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    status = unknown_model_status if error.kind == "unknown_model" else error.status
    return JSONResponse(error_body(error), status_code=status, headers=headers)


def error_body(error: Rejected) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": ERROR_TYPES.get(error.status, "invalid_request_error"),
                      "param": error.param, "code": error.code}}


def from_validation_error(error: ValidationError) -> Rejected:
    """The first problem, named by its top-level field (OpenAI's `param`)."""
    first = error.errors()[0]
    location = first.get("loc", ())
    param = str(location[0]) if location else None
    where = ".".join(str(part) for part in location)
    return Rejected.invalid(param, f"Invalid value for '{where}': {first.get('msg')}.")


async def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Rejected.invalid(None, f"The request body is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise Rejected.invalid(None, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise from_validation_error(error) from error


# -- running requests -------------------------------------------------------------------------------------

async def until_disconnected(request: Request) -> None:
    """Return once the client has gone (the body is already read, so only a disconnect arrives here)."""
    for _ in range(1_000_000):
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.05)  # not a disconnect: do not spin on a chatty server implementation


async def complete_unless_disconnected(request: Request, frontend: Frontend,
                                       jobs: list[tuple[str, list[int], SamplingParams]]) -> list[Completion] | None:
    """Run non-streamed generations; if the client hangs up first, cancel them (the engine aborts them)."""
    work = asyncio.ensure_future(asyncio.gather(*(frontend.complete(*job) for job in jobs)))
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if work.done():
        try:
            return list(work.result())
        except Rejected:
            raise
        except Exception as error:  # the engine failed: a 500 with the reason, not a dropped connection
            raise Rejected("internal", f"Generation failed: {error}") from error
    work.cancel()
    await asyncio.gather(work, return_exceptions=True)
    return None


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def total_usage(results: list[Completion]) -> dict[str, Any]:
    return usage(sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results),
                 sum(r.cached_tokens for r in results))


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, separators=(',', ':'))}\n\n"


async def sse_stream(frontend: Frontend, jobs: list[tuple[str, list[int], SamplingParams]],
                     chunk: Any, include_usage: bool, chat: bool) -> AsyncIterator[str]:
    """SSE chunks for every job (choice index = job index); usage chunk last when asked; then [DONE].
    Starlette cancels this generator when the client disconnects, which closes the engine streams."""
    counts: dict[int, Completion] = {i: Completion(prompt_tokens=len(job[1])) for i, job in enumerate(jobs)}
    extra = {"usage": None} if include_usage else {}
    if chat:
        for index in counts:
            yield sse(chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}], extra))
    streams = [frontend.stream(*job) for job in jobs]
    try:
        async with contextlib.aclosing(merge_streams(streams)) as merged:
            async for index, output in merged:
                state = counts[index]
                state.prompt_tokens, state.completion_tokens = output.prompt_tokens, output.completion_tokens
                state.cached_tokens = output.cached_tokens
                if not output.new_text and not output.finished:
                    continue
                reason = output.finish_reason if output.finished else None
                if chat:
                    delta = {"content": output.new_text} if output.new_text else {}
                    choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
                else:
                    choice = {"index": index, "text": output.new_text, "logprobs": None, "finish_reason": reason}
                yield sse(chunk([choice], extra))
    except Rejected as error:
        yield sse(error_body(error))
    except Exception as error:  # the engine failed mid-stream: tell the client in-band, then end cleanly
        yield sse(error_body(Rejected("internal", f"Generation failed: {error}")))
    if include_usage:
        yield sse(chunk([], {"usage": total_usage(list(counts.values()))}))
    yield sse("[DONE]")


# -- routes -----------------------------------------------------------------------------------------------

def openai_router(frontend: Frontend) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def list_models() -> JSONResponse:
        try:
            engine = frontend.require_ready()
        except Rejected as error:
            return error_response(error)
        return JSONResponse({"object": "list", "data": [model_card(engine)]})

    @router.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str) -> JSONResponse:
        """What `client.models.retrieve(id)` asks for; an unknown id is OpenAI's 404 model_not_found."""
        try:
            engine = frontend.require_ready()
            frontend.check_model(model_id)
        except Rejected as error:
            return error_response(error, unknown_model_status=404)
        return JSONResponse(model_card(engine))

    @router.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> JSONResponse | StreamingResponse:
        try:
            frontend.require_ready()
            body = await parse_body(request, CompletionRequest)
            frontend.check_model(body.model)
            prompts = completion_prompts(frontend, body.prompt)
            jobs = []
            for prompt_ids in prompts:
                max_tokens = frontend.resolve_max_tokens(len(prompt_ids), body.max_tokens,
                                                         COMPLETIONS_DEFAULT_MAX_TOKENS)
                jobs.append((frontend.new_request_id("cmpl"), prompt_ids, body.sampling_params(frontend, max_tokens)))
            frontend.check_queue(jobs)
        except Rejected as error:
            return error_response(error)
        response_id, created, model = jobs[0][0], int(time.time()), frontend.model_name

        def chunk(choices: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
            return {"id": response_id, "object": "text_completion", "created": created, "model": model,
                    "choices": choices, **extra}

        if body.stream:
            return event_stream(sse_stream(frontend, jobs, chunk, body.include_usage, chat=False))
        try:
            results = await complete_unless_disconnected(request, frontend, jobs)
        except Rejected as error:
            return error_response(error)
        if results is None:
            return JSONResponse({}, status_code=499)
        choices = [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                   for i, r in enumerate(results)]
        return JSONResponse({**chunk(choices, {}), "usage": total_usage(results)})

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        try:
            frontend.require_ready()
            body = await parse_body(request, ChatCompletionRequest)
            frontend.check_model(body.model)
            body.check_supported()
            prompt_ids = frontend.encode_chat([m.as_template_input() for m in body.messages])
            requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
            param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
            max_tokens = frontend.resolve_max_tokens(len(prompt_ids), requested, None, param=param,
                                                     prompt_param="messages")
            jobs = [(frontend.new_request_id("chatcmpl"), prompt_ids, body.sampling_params(frontend, max_tokens))]
            frontend.check_queue(jobs)
        except Rejected as error:
            return error_response(error)
        response_id, created, model = jobs[0][0], int(time.time()), frontend.model_name

        def chunk(choices: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
            return {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": choices, **extra}

        if body.stream:
            return event_stream(sse_stream(frontend, jobs, chunk, body.include_usage, chat=True))
        try:
            results = await complete_unless_disconnected(request, frontend, jobs)
        except Rejected as error:
            return error_response(error)
        if results is None:
            return JSONResponse({}, status_code=499)
        result = results[0]
        return JSONResponse({
            "id": response_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "logprobs": None, "finish_reason": result.finish_reason}],
            "usage": total_usage(results)})

    @router.api_route("/v1/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown_endpoint(path: str, request: Request) -> JSONResponse:
        """Endpoints this server lacks (embeddings, responses, ...): a 404 that OpenAI clients can read."""
        return JSONResponse({"error": {
            "message": f"{request.method} /v1/{path} is not served here; this server has POST /v1/chat/completions, "
                       "POST /v1/completions, GET /v1/models and GET /v1/models/{model}.",
            "type": "invalid_request_error", "param": None, "code": "unknown_url"}}, status_code=404)

    return router


def model_card(engine: Any) -> dict[str, Any]:
    return {"id": engine.model_name, "object": "model", "created": int(time.time()), "owned_by": "sloserve",
            "root": engine.model_name, "max_model_len": engine.max_model_len}


def completion_prompts(frontend: Frontend, prompt: str | list[str] | list[int] | list[list[int]]) -> list[list[int]]:
    """OpenAI's four prompt shapes -> a list of token-id prompts."""
    if isinstance(prompt, str):
        return [frontend.encode(prompt)]
    if not prompt:
        raise Rejected.invalid("prompt", "The prompt is empty.")
    if all(isinstance(p, int) for p in prompt):
        ids = list(prompt)  # type: ignore[arg-type]
        frontend.check_token_ids(ids, "prompt")
        return [ids]
    prompts = []
    for item in prompt:
        ids = frontend.encode(item) if isinstance(item, str) else list(item)  # type: ignore[arg-type]
        frontend.check_token_ids(ids, "prompt")
        prompts.append(ids)
    return prompts


def event_stream(chunks: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(chunks, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
