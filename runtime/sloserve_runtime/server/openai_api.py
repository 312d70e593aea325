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

from sloserve_runtime.engine.sampling_params import SEED_MAX, SEED_MIN, SamplingParams
from sloserve_runtime.server.frontend import Completion, Frontend, Rejected, merge_streams

ModelT = TypeVar("ModelT", bound=BaseModel)

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to "all that fits"
MAX_CHOICES = 128  # OpenAI's upper bound on `n`

ERROR_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 405: "invalid_request_error",
               429: "rate_limit_error", 500: "internal_server_error", 503: "service_unavailable_error"}


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
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None  # 0: only the most likely token, as OpenAI
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    logit_bias: dict[str, float] | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0)] = 0
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = 1  # null: clients that send unset fields as null
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: Literal[0, 0.0] | None = None
    frequency_penalty: Literal[0, 0.0] | None = None
    user: str | None = None

    @property
    def choices(self) -> int:
        return self.n or 1

    def check_stream_options(self) -> None:
        """OpenAI refuses stream_options on a request that does not stream, so a client learns at once that
        the usage chunk it asked for will never come."""
        if self.stream_options is not None and not self.stream:
            raise Rejected.invalid("stream_options", "The 'stream_options' parameter is only allowed when 'stream' "
                                   "is enabled.")

    def choice_seed(self, choice: int) -> int | None:
        """Choice `choice`'s seed: with n > 1 each choice gets its own, so that seeded choices still differ
        (and the whole response stays reproducible)."""
        if self.seed is None or choice == 0 or not SEED_MIN <= self.seed <= SEED_MAX:
            return self.seed  # an out-of-range seed stays as sent and is refused by validate()
        return SEED_MIN + (self.seed - SEED_MIN + choice) % (SEED_MAX - SEED_MIN + 1)

    def sampling_params(self, frontend: Frontend, max_tokens: int, choice: int = 0) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        bias: dict[int, float] = {}
        for key, value in (self.logit_bias or {}).items():
            try:
                bias[int(key)] = value
            except ValueError as error:
                raise Rejected.invalid("logit_bias", f"logit_bias keys must be token ids, got {key!r}.") from error
        top_k = self.top_k if self.top_k not in (None, 0) else -1
        params = SamplingParams(max_tokens=max_tokens, temperature=1.0 if self.temperature is None else self.temperature,
                                top_p=1.0 if self.top_p is None else self.top_p, top_k=top_k,
                                seed=self.choice_seed(choice),
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
    """One message; OpenAI's roles only, so a typo in a role is a 400 rather than text the model never saw
    in training. `name` and an assistant's `tool_calls` are accepted and not shown to the model."""

    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def as_template_input(self, index: int) -> dict[str, str]:
        content = self.content
        if content is None and self.role != "assistant":  # only an assistant turn may be content-less
            raise Rejected.invalid("messages", f"Missing required parameter: 'messages[{index}].content' "
                                   f"(role '{self.role}').")
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
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None

    def check_supported(self) -> None:
        """Refuse what this server would otherwise drop silently: the client would take plain text for a
        tool call or for JSON. Empty tools, tool_choice "none" and response_format "text" ask for nothing."""
        if self.audio is not None or any(kind != "text" for kind in self.modalities or []):
            raise Rejected.invalid("audio" if self.audio is not None else "modalities", "Audio output is not "
                                   "supported; this server only returns text (modalities: [\"text\"]).")
        if self.web_search_options is not None:
            raise Rejected.invalid("web_search_options", "Web search is not supported by this server; send the "
                                   "request without 'web_search_options'.")
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

def error_response(error: Rejected) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def error_body(error: Rejected) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": ERROR_TYPES.get(error.status, "invalid_request_error"),
                      "param": error.param, "code": error.code}}


# Fields whose only accepted values ask for nothing: the 400 says why another value is refused.
UNSUPPORTED = {"logprobs": "log probabilities are not returned by this server",
               "top_logprobs": "log probabilities are not returned by this server",
               "echo": "echoing the prompt is not supported", "suffix": "suffixes (insertion) are not supported",
               "best_of": "best_of > 1 is not supported", "presence_penalty": "penalties are not supported",
               "frequency_penalty": "penalties are not supported"}


def from_validation_error(error: ValidationError) -> Rejected:
    """The first problem, named by its top-level field (OpenAI's `param`)."""
    first = error.errors()[0]
    location = first.get("loc", ())
    param = str(location[0]) if location else None
    where = ".".join(str(part) for part in location)
    reason = f" ({UNSUPPORTED[param]})" if param in UNSUPPORTED and len(location) == 1 else ""
    return Rejected.invalid(param, f"Invalid value for '{where}': {first.get('msg')}{reason}.")


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


def total_usage(results: list[Completion], choices: int = 1) -> dict[str, Any]:
    """Usage as OpenAI counts it: each prompt once, however many choices (`n`) were generated from it;
    `results` are grouped by prompt, `choices` per prompt."""
    firsts = results[::choices]
    return usage(sum(r.prompt_tokens for r in firsts), sum(r.completion_tokens for r in results),
                 sum(r.cached_tokens for r in firsts))


def sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, separators=(',', ':'))}\n\n"


async def sse_stream(frontend: Frontend, jobs: list[tuple[str, list[int], SamplingParams]],
                     chunk: Any, include_usage: bool, chat: bool, choices: int = 1) -> AsyncIterator[str]:
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
        yield sse(chunk([], {"usage": total_usage(list(counts.values()), choices)}))
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
            return error_response(error)
        return JSONResponse(model_card(engine))

    @router.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> JSONResponse | StreamingResponse:
        try:
            frontend.require_ready()
            body = await parse_body(request, CompletionRequest)
            frontend.check_model(body.model)
            body.check_stream_options()
            jobs = []
            for prompt_ids in completion_prompts(frontend, body.prompt):  # choice index: prompt * n + choice
                max_tokens = frontend.resolve_max_tokens(len(prompt_ids), body.max_tokens,
                                                         COMPLETIONS_DEFAULT_MAX_TOKENS)
                jobs += choice_jobs(frontend, "cmpl", prompt_ids, body, max_tokens)
            frontend.check_queue(jobs)
        except Rejected as error:
            return error_response(error)
        response_id, created, model = jobs[0][0], int(time.time()), frontend.model_name

        def chunk(choices: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
            return {"id": response_id, "object": "text_completion", "created": created, "model": model,
                    "choices": choices, **extra}

        if body.stream:
            return event_stream(sse_stream(frontend, jobs, chunk, body.include_usage, False, body.choices))
        try:
            results = await complete_unless_disconnected(request, frontend, jobs)
        except Rejected as error:
            return error_response(error)
        if results is None:
            return JSONResponse({}, status_code=499)
        choices = [{"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
                   for i, r in enumerate(results)]
        return JSONResponse({**chunk(choices, {}), "usage": total_usage(results, body.choices)})

    @router.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        try:
            frontend.require_ready()
            body = await parse_body(request, ChatCompletionRequest)
            frontend.check_model(body.model)
            body.check_stream_options()
            body.check_supported()
            prompt_ids = frontend.encode_chat([m.as_template_input(i) for i, m in enumerate(body.messages)])
            requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
            param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
            max_tokens = frontend.resolve_max_tokens(len(prompt_ids), requested, None, param=param,
                                                     prompt_param="messages")
            jobs = choice_jobs(frontend, "chatcmpl", prompt_ids, body, max_tokens)
            frontend.check_queue(jobs)
        except Rejected as error:
            return error_response(error)
        response_id, created, model = jobs[0][0], int(time.time()), frontend.model_name

        def chunk(choices: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
            return {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": choices, **extra}

        if body.stream:
            return event_stream(sse_stream(frontend, jobs, chunk, body.include_usage, True, body.choices))
        try:
            results = await complete_unless_disconnected(request, frontend, jobs)
        except Rejected as error:
            return error_response(error)
        if results is None:
            return JSONResponse({}, status_code=499)
        return JSONResponse({
            "id": response_id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": result.text},
                         "logprobs": None, "finish_reason": result.finish_reason}
                        for i, result in enumerate(results)],
            "usage": total_usage(results, body.choices)})

    return router


def choice_jobs(frontend: Frontend, prefix: str, prompt_ids: list[int], body: SamplingFields,
                max_tokens: int) -> list[tuple[str, list[int], SamplingParams]]:
    """One engine request per choice (`n`): each samples on its own, as OpenAI's choices do."""
    return [(frontend.new_request_id(prefix), prompt_ids, body.sampling_params(frontend, max_tokens, choice))
            for choice in range(body.choices)]


def http_error_body(method: str, path: str, status: int, allow: str | None) -> dict[str, Any]:
    """OpenAI's shape for a path this server lacks (404: embeddings, responses, ...) or a method a path does
    not take (405, e.g. GET /v1/completions), so OpenAI clients raise their usual errors with a reason."""
    if status == 405:
        message, code = f"{method} is not allowed on {path}; use {allow or 'another method'}.", "method_not_allowed"
    elif status == 404:
        message, code = (f"{method} {path} is not served here; this server has POST /v1/chat/completions, "
                         "POST /v1/completions, GET /v1/models and GET /v1/models/{model}."), "unknown_url"
    else:
        message, code = f"{method} {path}: HTTP {status}.", None
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": None,
                      "code": code}}


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
