"""KServe v2 / Triton HTTP protocol: health, model metadata, configuration and readiness, the repository
index (POST /v2/repository/index), tensor inference (POST /v2/models/{name}/infer, BYTES text_input ->
text_output, JSON or binary tensor data; kserve_tensors.py) and Triton's generate extension
(POST /v2/models/{name}/generate and /generate_stream).

Request fields follow what existing Triton clients send, so their scripts work unchanged:
- vLLM backend: {"text_input": ..., "parameters": {"stream": false, "temperature": 0, "max_tokens": 20}},
  where parameter values may be strings ("0.7"), as the backend's sampling_parameters JSON allows;
- TensorRT-LLM ensemble: {"text_input": ..., "max_tokens": 20, "bad_words": "", "stop_words": "", ...}.
The same translation (generation_request) serves the gRPC front end (grpc_server.py).

As in Triton's vLLM backend, a non-streamed text_output starts with the prompt unless
exclude_input_in_output is true; streamed responses carry only the new text. Errors are {"error": "..."}.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from sloserve_runtime.engine.sampling_params import SamplingParams
from sloserve_runtime.server.frontend import Frontend, Phase, Rejected
from sloserve_runtime.server.kserve_tensors import HEADER_LENGTH, http_infer_response, parse_http_infer
from sloserve_runtime.server.openai_api import complete_unless_disconnected

MODEL_VERSION = "1"
SERVER_NAME = "sloserve"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["generate", "generate_stream", "model_configuration", "binary_tensor_data", "parameters"]
DEFAULT_MAX_TOKENS = 16  # vLLM's default, which Triton's vLLM backend inherits

# (name, datatype, shape) of every input a client may send; all optional except text_input.
INPUTS = [
    ("text_input", "BYTES", [1]),
    ("stream", "BOOL", [1]),
    ("sampling_parameters", "BYTES", [1]),
    ("exclude_input_in_output", "BOOL", [1]),
    ("max_tokens", "INT32", [1]),
    ("temperature", "FP32", [1]),
    ("top_p", "FP32", [1]),
    ("top_k", "INT32", [1]),
    ("random_seed", "UINT64", [1]),
    ("min_tokens", "INT32", [1]),
    ("stop_words", "BYTES", [-1]),
    ("bad_words", "BYTES", [-1]),
    ("end_id", "INT32", [1]),
    ("pad_id", "INT32", [1]),
    ("beam_width", "INT32", [1]),
]
OUTPUTS = [("text_output", "BYTES", [-1])]
INPUT_TYPES = {n: d for n, d, _ in INPUTS}
# Triton's model-configuration names of the datatypes above (model_config.proto's DataType).
CONFIG_TYPES = {"BOOL": "TYPE_BOOL", "INT32": "TYPE_INT32", "UINT64": "TYPE_UINT64", "FP32": "TYPE_FP32",
                "BYTES": "TYPE_STRING"}
# Triton's model states in the repository index, by server phase.
INDEX_STATES = {Phase.LOADING: ("LOADING", ""), Phase.READY: ("READY", ""),
                Phase.DRAINING: ("UNLOADING", "the server is shutting down"), Phase.FAILED: ("UNAVAILABLE", "")}

FLOAT_FIELDS = {"temperature", "top_p"}
INT_FIELDS = {"max_tokens", "top_k", "seed", "random_seed", "min_tokens", "beam_width", "end_id", "pad_id"}
BOOL_FIELDS = {"stream", "exclude_input_in_output", "ignore_eos"}
# Other fields (bad_words, end_id, pad_id, repetition_penalty, ...) are accepted and ignored, so ensemble
# clients that always send them keep working.


@dataclass
class GenerationRequest:
    text_input: str
    params: SamplingParams
    stream: bool
    exclude_input_in_output: bool


def _coerce(name: str, value: Any) -> Any:
    """Strings like "0.7" or "true" are how the vLLM backend's sampling_parameters carry numbers."""
    try:
        if name in BOOL_FIELDS:
            if isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0"}:
                    raise ValueError(value)
                return value.lower() in {"true", "1"}
            if isinstance(value, bool | int):
                return bool(value)
            raise ValueError(value)
        if name in INT_FIELDS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if name in FLOAT_FIELDS:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
    except (TypeError, ValueError) as error:
        raise Rejected.invalid(name, f"Invalid value for '{name}': {value!r}.") from error
    return value


def _stop_list(name: str, value: Any) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v for v in value if v]
    raise Rejected.invalid(name, f"'{name}' must be a string or a list of strings.")


def generation_request(fields: dict[str, Any]) -> GenerationRequest:
    """Merge top-level fields, "parameters" and a sampling_parameters JSON string, then validate."""
    merged: dict[str, Any] = {}
    for source in (fields.get("parameters") or {}, fields):
        if not isinstance(source, dict):
            raise Rejected.invalid("parameters", "'parameters' must be a JSON object.")
        merged.update({k: v for k, v in source.items() if k != "parameters"})
    if "sampling_parameters" in merged:
        raw = merged.pop("sampling_parameters")
        try:
            sampling = json.loads(raw) if isinstance(raw, str | bytes) else raw
        except json.JSONDecodeError as error:
            raise Rejected.invalid("sampling_parameters", f"sampling_parameters is not JSON: {error}") from error
        if not isinstance(sampling, dict):
            raise Rejected.invalid("sampling_parameters", "sampling_parameters must be a JSON object.")
        merged.update(sampling)
    text = merged.pop("text_input", None)
    if not isinstance(text, str):
        raise Rejected.invalid("text_input", "'text_input' (a string) is required.")
    values = {k: _coerce(k, v) for k, v in merged.items()}
    if values.get("beam_width", 1) != 1:
        raise Rejected.invalid("beam_width", "Only beam_width 1 is supported.")
    stop = _stop_list("stop", values.get("stop")) + _stop_list("stop_words", values.get("stop_words"))
    top_k = values.get("top_k", -1)
    seed = values.get("seed", values.get("random_seed"))
    params = SamplingParams(max_tokens=values.get("max_tokens", DEFAULT_MAX_TOKENS),
                            temperature=values.get("temperature", 1.0), top_p=values.get("top_p", 1.0),
                            top_k=-1 if top_k == 0 else top_k, seed=seed, stop=stop,
                            ignore_eos=values.get("ignore_eos", False), min_tokens=values.get("min_tokens", 0))
    return GenerationRequest(text_input=text, params=params, stream=values.get("stream", False),
                             exclude_input_in_output=values.get("exclude_input_in_output", False))


def prepare(frontend: Frontend, request: GenerationRequest) -> tuple[str, list[int], SamplingParams]:
    """Tokenize and check limits; returns an engine job (request id, prompt ids, params)."""
    prompt_ids = frontend.encode(request.text_input)
    max_tokens = frontend.resolve_max_tokens(len(prompt_ids), request.params.max_tokens, None,
                                             prompt_param="text_input")
    request.params.max_tokens = max_tokens
    return frontend.new_request_id("v2"), prompt_ids, frontend.validated(request.params)


def model_metadata(name: str) -> dict[str, Any]:
    return {"name": name, "versions": [MODEL_VERSION], "platform": SERVER_NAME,
            "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in INPUTS],
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in OUTPUTS]}


def model_config(name: str) -> dict[str, Any]:
    """The model's configuration in Triton's JSON form (model_config.proto); the gRPC ModelConfig parses the
    same dict, so both transports say the same. Decoupled: a request may get many responses (streaming)."""
    return {"name": name, "platform": "", "backend": SERVER_NAME, "max_batch_size": 0,
            "input": [{"name": n, "data_type": CONFIG_TYPES[d], "dims": s, "optional": n != "text_input"}
                      for n, d, s in INPUTS],
            "output": [{"name": n, "data_type": CONFIG_TYPES[d], "dims": s} for n, d, s in OUTPUTS],
            "model_transaction_policy": {"decoupled": True}}


def repository_index(frontend: Frontend, ready_only: bool = False) -> list[dict[str, str]]:
    """The one served model with its state; empty before the model's name is known (still loading)."""
    name = frontend.model_name or frontend.metrics.model_name
    state, reason = INDEX_STATES[frontend.phase]
    if frontend.phase is Phase.FAILED:
        reason = frontend.failure or "the model failed to load"
    if not name or (ready_only and state != "READY"):
        return []
    return [{"name": name, "version": MODEL_VERSION, "state": state, "reason": reason}]


def check_version(name: str, version: str) -> None:
    """Only version 1 exists (one model per process); another is Triton's "unknown model" (404 /
    NOT_FOUND), not a silent answer from version 1. Empty means "the server's choice", as in Triton."""
    if version not in ("", MODEL_VERSION):
        raise Rejected("unknown_model", f"Request for unknown model: '{name}' version {version} is not found; "
                       f"this server serves version {MODEL_VERSION}.", param="model_version", code="model_not_found")


def error_response(error: Rejected) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after is not None else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


def kserve_router(frontend: Frontend) -> APIRouter:
    router = APIRouter()

    def known_model(name: str, version: str) -> None:
        frontend.require_ready()
        frontend.check_model(name)
        check_version(name, version)

    @router.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})

    @router.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @router.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if frontend.ready else 503)

    @router.get("/v2/models/{name}")
    @router.get("/v2/models/{name}/versions/{version}")
    async def metadata(name: str, version: str = MODEL_VERSION) -> JSONResponse:
        try:
            known_model(name, version)
        except Rejected as error:
            return error_response(error)
        return JSONResponse(model_metadata(name))

    @router.get("/v2/models/{name}/ready")
    @router.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str = MODEL_VERSION) -> Response:
        try:
            known_model(name, version)
        except Rejected as error:
            return error_response(error)
        return Response(status_code=200)

    @router.post("/v2/repository/index")
    async def index(request: Request) -> JSONResponse:
        body = await request.body()
        try:
            options = json.loads(body) if body.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return JSONResponse({"error": f"The request body is not valid JSON: {error}"}, status_code=400)
        if not isinstance(options, dict) or not isinstance(options.get("ready", False), bool):
            return JSONResponse({"error": "The body must be a JSON object; 'ready' a boolean."}, status_code=400)
        return JSONResponse(repository_index(frontend, ready_only=options.get("ready", False)))

    @router.get("/v2/models/{name}/config")
    @router.get("/v2/models/{name}/versions/{version}/config")
    async def config(name: str, version: str = MODEL_VERSION) -> JSONResponse:
        try:
            known_model(name, version)
        except Rejected as error:
            return error_response(error)
        return JSONResponse(model_config(name))

    @router.post("/v2/models/{name}/infer", response_model=None)
    @router.post("/v2/models/{name}/versions/{version}/infer", response_model=None)
    async def infer(name: str, request: Request, version: str = MODEL_VERSION) -> Response:
        """Tensor inference: the whole generation in one response (stream=true cannot stream here)."""
        try:
            known_model(name, version)
            tensors = parse_http_infer(await request.body(), request.headers.get(HEADER_LENGTH), INPUT_TYPES)
            generation = generation_request(tensors.fields)
            job = prepare(frontend, generation)
            frontend.check_queue([job])
            results = await complete_unless_disconnected(request, frontend, [job])
        except Rejected as error:
            return error_response(error)
        if results is None:
            return Response(status_code=499)
        text = results[0].text if generation.exclude_input_in_output else generation.text_input + results[0].text
        body, headers = http_infer_response(name, MODEL_VERSION, tensors, text)
        return Response(body, headers=headers)

    async def parse(request: Request, name: str, version: str) -> tuple[GenerationRequest, tuple]:
        known_model(name, version)
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise Rejected.invalid(None, f"The request body is not valid JSON: {error}") from error
        if not isinstance(body, dict):
            raise Rejected.invalid(None, "The request body must be a JSON object.")
        generation = generation_request(body)
        job = prepare(frontend, generation)
        frontend.check_queue([job])
        return generation, job

    @router.post("/v2/models/{name}/generate", response_model=None)
    @router.post("/v2/models/{name}/versions/{version}/generate", response_model=None)
    async def generate(name: str, request: Request, version: str = MODEL_VERSION) -> JSONResponse:
        try:
            generation, job = await parse(request, name, version)
        except Rejected as error:
            return error_response(error)
        try:
            results = await complete_unless_disconnected(request, frontend, [job])
        except Rejected as error:
            return error_response(error)
        if results is None:
            return JSONResponse({}, status_code=499)
        text = results[0].text if generation.exclude_input_in_output else generation.text_input + results[0].text
        return JSONResponse({"model_name": name, "model_version": MODEL_VERSION, "text_output": text})

    @router.post("/v2/models/{name}/generate_stream", response_model=None)
    @router.post("/v2/models/{name}/versions/{version}/generate_stream", response_model=None)
    async def generate_stream(name: str, request: Request,
                              version: str = MODEL_VERSION) -> JSONResponse | StreamingResponse:
        try:
            _, job = await parse(request, name, version)
        except Rejected as error:
            return error_response(error)

        async def events() -> AsyncIterator[str]:
            try:
                async with contextlib.aclosing(frontend.stream(*job)) as outputs:
                    async for output in outputs:
                        payload = {"model_name": name, "model_version": MODEL_VERSION,
                                   "text_output": output.new_text}
                        yield f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
            except Exception as error:  # in-band, as Triton does once the stream has started
                yield f"data: {json.dumps({'error': f'Generation failed: {error}'})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router
