"""Triton's GRPCInferenceService (KServe v2 gRPC) on grpc.aio, using the stubs tritonclient ships.

Existing client scripts for Triton's vLLM backend (text_input, stream, sampling_parameters JSON,
exclude_input_in_output) and for the TensorRT-LLM ensemble (text_input, max_tokens INT32, stream,
temperature, top_k, top_p, ...) work unchanged; the tensor-to-parameter translation is shared with the
HTTP front end (kserve.generation_request, kserve_tensors.tensor_fields). RepositoryIndex and ModelConfig
answer from the same dicts as HTTP (kserve.repository_index, kserve.model_config).

ModelStreamInfer sends one response per engine output (one token, more with speculation), each carrying
the parameter triton_final_response (true on the last). With triton_enable_empty_final_response (tritonclient's
enable_empty_final_response=True) the final flag comes in an extra response without outputs, as Triton does.
Several requests may share one stream; cancelling the stream aborts all of them in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

from sloserve_runtime.server.frontend import Frontend, Rejected
from sloserve_runtime.server.kserve import (
    EXTENSIONS,
    INPUTS,
    MODEL_VERSION,
    OUTPUTS,
    SERVER_NAME,
    SERVER_VERSION,
    check_version,
    generation_request,
    model_config,
    prepare,
    repository_index,
)
from sloserve_runtime.server.kserve_tensors import tensor_fields, text_tensor

log = logging.getLogger("sloserve_runtime.grpc")

STATUS = {"invalid": grpc.StatusCode.INVALID_ARGUMENT, "unknown_model": grpc.StatusCode.NOT_FOUND,
          "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED, "unavailable": grpc.StatusCode.UNAVAILABLE,
          "internal": grpc.StatusCode.INTERNAL}
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def tensor_values(request: Any, index: int) -> np.ndarray:
    """Input `index` of a ModelInferRequest as a flat numpy array (raw_input_contents or typed contents)."""
    tensor = request.inputs[index]
    datatype = tensor.datatype
    if datatype not in CONTENTS_FIELD:
        raise Rejected.invalid(tensor.name, f"Unsupported datatype {datatype} for input '{tensor.name}'.")
    if index < len(request.raw_input_contents):
        raw = request.raw_input_contents[index]
        if datatype == "BYTES":
            values = deserialize_bytes_tensor(raw)
        else:
            values = np.frombuffer(raw, dtype=triton_to_np_dtype(datatype))
    else:
        values = np.array(list(getattr(tensor.contents, CONTENTS_FIELD[datatype])), dtype=object)
    return values.reshape(-1)


def request_fields(request: Any) -> dict[str, Any]:
    """A ModelInferRequest as the dict generation_request() takes (request parameters first, tensors win)."""
    parameters: dict[str, Any] = {}
    for key, parameter in request.parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if kind is not None:
            parameters[key] = getattr(parameter, kind)
    return tensor_fields(parameters, ((t.name, tensor_values(request, i)) for i, t in enumerate(request.inputs)))


def text_output(request: Any, text: str) -> tuple[Any, bytes]:
    """The text_output tensor, shaped like the text_input it answers ([1] or the ensemble's [1, 1])."""
    rank = 1
    for tensor in request.inputs:
        if tensor.name == "text_input":
            rank = max(len(tensor.shape), 1)
    shape = [1] * rank
    tensor = service_pb2.ModelInferResponse.InferOutputTensor(name="text_output", datatype="BYTES", shape=shape)
    return tensor, text_tensor(text)


def infer_response(request: Any, text: str, final: bool | None) -> Any:
    response = service_pb2.ModelInferResponse(model_name=request.model_name, model_version=MODEL_VERSION,
                                              id=request.id)
    tensor, raw = text_output(request, text)
    response.outputs.append(tensor)
    response.raw_output_contents.append(raw)
    if final is not None:
        response.parameters["triton_final_response"].bool_param = final
    return response


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend

    async def _check_model(self, name: str, version: str, context: Any) -> None:
        try:
            self.frontend.require_ready()
            self.frontend.check_model(name, param="model_name")
            check_version(name, version)
        except Rejected as error:
            await context.abort(STATUS[error.kind], error.message)

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.frontend.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self.frontend.ready and request.name == self.frontend.model_name and \
            request.version in ("", MODEL_VERSION)
        return service_pb2.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        await self._check_model(request.name, request.version, context)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=request.name, versions=[MODEL_VERSION], platform=SERVER_NAME,
            inputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in INPUTS],
            outputs=[tensor(name=n, datatype=d, shape=s) for n, d, s in OUTPUTS])

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        await self._check_model(request.name, request.version, context)
        config = json_format.ParseDict(model_config(request.name), model_config_pb2.ModelConfig())
        return service_pb2.ModelConfigResponse(config=config)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        """What clients that list models first (perf tools, tritonclient's get_model_repository_index) call."""
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        models = repository_index(self.frontend, ready_only=request.ready)
        return service_pb2.RepositoryIndexResponse(models=[index(**model) for model in models])

    def _job(self, request: Any) -> tuple[Any, tuple]:
        self.frontend.require_ready()
        self.frontend.check_model(request.model_name, param="model_name")
        check_version(request.model_name, request.model_version)
        generation = generation_request(request_fields(request))
        job = prepare(self.frontend, generation)
        self.frontend.check_queue([job])
        return generation, job

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """Unary: the whole generation in one response (a stream=true flag cannot stream here)."""
        try:
            generation, job = self._job(request)
            with self.frontend.track():
                result = await self.frontend.complete(*job)
        except Rejected as error:
            await context.abort(STATUS[error.kind], error.message)
        except Exception as error:  # the engine failed: say so, as INTERNAL
            log.exception("generation failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"Generation failed: {error}")
        text = result.text if generation.exclude_input_in_output else generation.text_input + result.text
        return infer_response(request, text, None)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator, context: Any) -> AsyncIterator[Any]:
        responses: asyncio.Queue[Any] = asyncio.Queue()
        workers: set[asyncio.Task] = set()
        reading_done = asyncio.Event()

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(self._serve_streamed(request, responses))
                    workers.add(task)
                    task.add_done_callback(lambda t: (workers.discard(t), responses.put_nowait(None)))
            finally:
                reading_done.set()
                responses.put_nowait(None)

        reader = asyncio.create_task(read_requests())
        try:
            while True:  # ends when the client half-closes and every request has finished
                item = await responses.get()
                if item is not None:
                    yield item
                elif reading_done.is_set() and not workers and responses.empty():
                    break
        finally:  # client cancelled or went away: abort everything still generating
            reader.cancel()
            for task in list(workers):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(reader, *workers, return_exceptions=True)

    async def _serve_streamed(self, request: Any, responses: asyncio.Queue) -> None:
        def error(message: str) -> None:
            responses.put_nowait(service_pb2.ModelStreamInferResponse(
                error_message=message, infer_response=service_pb2.ModelInferResponse(id=request.id)))

        try:
            generation, job = self._job(request)
        except Rejected as rejected:
            error(rejected.message)
            return
        empty_final = bool(request.parameters.get("triton_enable_empty_final_response") and
                           request.parameters["triton_enable_empty_final_response"].bool_param)
        with self.frontend.track():
            try:
                if not generation.stream:
                    result = await self.frontend.complete(*job)
                    text = result.text if generation.exclude_input_in_output else generation.text_input + result.text
                    responses.put_nowait(service_pb2.ModelStreamInferResponse(
                        infer_response=infer_response(request, text, not empty_final)))
                else:
                    async for output in self.frontend.stream(*job):
                        final = output.finished and not empty_final
                        responses.put_nowait(service_pb2.ModelStreamInferResponse(
                            infer_response=infer_response(request, output.new_text, final)))
                if empty_final:
                    final_response = service_pb2.ModelInferResponse(model_name=request.model_name,
                                                                    model_version=MODEL_VERSION, id=request.id)
                    final_response.parameters["triton_final_response"].bool_param = True
                    responses.put_nowait(service_pb2.ModelStreamInferResponse(infer_response=final_response))
            except Rejected as rejected:
                error(rejected.message)
            except Exception as failure:  # reported in-band; the stream stays usable for other requests
                log.exception("streamed generation failed")
                error(f"Generation failed: {failure}")


async def start_grpc_server(frontend: Frontend, host: str, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(frontend), server)
    address = f"[::]:{port}" if host in {"0.0.0.0", "::", ""} else f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind the gRPC port {address}")
    await server.start()
    log.info("gRPC GRPCInferenceService on %s", address)
    return server
