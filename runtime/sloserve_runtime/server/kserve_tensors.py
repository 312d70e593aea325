"""Tensors of the Open Inference Protocol (KServe v2) -> the fields generation_request() takes, and the
text_output tensor back, for both transports.

HTTP `POST /v2/models/{name}/infer` bodies come in two shapes, both of which tritonclient.http sends:
- plain JSON, each input's values in "data" (BYTES as UTF-8 strings, possibly nested lists);
- Triton's binary tensor data extension: the header `Inference-Header-Content-Length: n` says the first n
  bytes are the JSON; the raw tensors follow in input order, each input naming its length in
  parameters.binary_data_size (BYTES serialized as 4-byte little-endian length + bytes per element).
The reply uses binary data for an output when the request asked (parameters.binary_data_output, or
binary_data on the requested output), JSON "data" otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype

from sloserve_runtime.server.frontend import Rejected

HEADER_LENGTH = "Inference-Header-Content-Length"
LIST_INPUTS = {"stop_words", "bad_words", "stop"}
# Request parameters that are Triton's scheduling options, not generation parameters.
RESERVED_PARAMETERS = {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority",
                       "timeout", "headers"}


def python_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def scalar(values: np.ndarray, name: str) -> Any:
    if values.size != 1:
        raise Rejected.invalid(name, f"Input '{name}' must hold one element (batch size 1), got {values.size}.")
    return python_value(values.reshape(-1)[0])


def tensor_fields(parameters: dict[str, Any], tensors: Iterable[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Request parameters first, then one field per input tensor (tensors win, as in Triton's backends)."""
    fields = {k: v for k, v in parameters.items() if k not in RESERVED_PARAMETERS}
    for name, values in tensors:
        values = values.reshape(-1)
        if name in LIST_INPUTS:
            fields[name] = [python_value(v) for v in values if python_value(v)]
        elif name == "sampling_parameters":
            try:
                fields[name] = json.loads(scalar(values, name) or "{}")
            except json.JSONDecodeError as error:
                raise Rejected.invalid(name, f"sampling_parameters is not JSON: {error}") from error
        else:
            fields[name] = scalar(values, name)
    return fields


def text_tensor(text: str) -> bytes:
    """One BYTES element, serialized as the binary tensor data extension and raw_output_contents want."""
    return serialize_byte_tensor(np.array([text.encode("utf-8")], dtype=np.object_)).item()


@dataclass
class HttpInferRequest:
    id: str | None
    fields: dict[str, Any]
    text_rank: int  # rank of text_input; text_output gets the same ([1] or the ensemble's [1, 1])
    binary_output: bool


def _json_values(name: str, datatype: str, data: Any, shape: list[int]) -> np.ndarray:
    if datatype == "BYTES":
        flat = np.array(data, dtype=np.object_).reshape(-1)
        values = np.array([v.encode("utf-8") if isinstance(v, str) else v for v in flat], dtype=np.object_)
    else:
        try:
            values = np.array(data, dtype=triton_to_np_dtype(datatype)).reshape(-1)
        except (TypeError, ValueError) as error:
            raise Rejected.invalid(name, f"Input '{name}': data does not match datatype {datatype}.") from error
    if shape and int(np.prod(shape)) != values.size:
        raise Rejected.invalid(name, f"Input '{name}' has shape {shape} but {values.size} element(s).")
    return values


def _binary_values(name: str, datatype: str, raw: bytes) -> np.ndarray:
    try:
        if datatype == "BYTES":
            return deserialize_bytes_tensor(raw)
        return np.frombuffer(raw, dtype=triton_to_np_dtype(datatype))
    except (TypeError, ValueError, IndexError) as error:  # truncated or misaligned buffers
        raise Rejected.invalid(name, f"Input '{name}': binary data is not a valid {datatype} tensor.") from error


def parse_http_infer(body: bytes, header_length: str | None, supported: dict[str, str]) -> HttpInferRequest:
    """An infer body -> generation fields. `supported` maps input name -> datatype (unknown inputs: 400)."""
    try:
        json_size = int(header_length) if header_length is not None else len(body)
    except ValueError as error:
        raise Rejected.invalid(None, f"{HEADER_LENGTH} is not an integer: {header_length!r}.") from error
    if not 0 <= json_size <= len(body):
        raise Rejected.invalid(None, f"{HEADER_LENGTH} {json_size} is outside the body ({len(body)} bytes).")
    try:
        header = json.loads(body[:json_size])
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Rejected.invalid(None, f"The inference request header is not valid JSON: {error}") from error
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise Rejected.invalid("inputs", "The inference request must be a JSON object with a list 'inputs'.")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise Rejected.invalid("parameters", "'parameters' must be a JSON object.")
    binary, offset = body[json_size:], 0
    tensors: list[tuple[str, np.ndarray]] = []
    text_rank = 1
    for tensor in header["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise Rejected.invalid("inputs", "Each input must be an object with a 'name'.")
        name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape") or []
        if name not in supported:
            raise Rejected.invalid(name, f"Unexpected input '{name}'; this model takes {sorted(supported)}.")
        if datatype != supported[name]:
            raise Rejected.invalid(name, f"Input '{name}' must be {supported[name]}, got {datatype}.")
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise Rejected.invalid(name, f"Input '{name}': binary_data_size {size} runs past the body.")
            values = _binary_values(name, datatype, binary[offset:offset + size])
            offset += size
        elif "data" in tensor:
            values = _json_values(name, datatype, tensor["data"], shape)
        else:
            raise Rejected.invalid(name, f"Input '{name}' has neither 'data' nor binary data.")
        if name == "text_input":
            text_rank = max(len(shape), 1)
        tensors.append((name, values))
    binary_output = bool(parameters.get("binary_data_output", False))
    for output in header.get("outputs") or []:
        if not isinstance(output, dict) or output.get("name") != "text_output":
            name = output.get("name") if isinstance(output, dict) else output
            raise Rejected.invalid("outputs", f"Unexpected output {name!r}; this model has 'text_output'.")
        binary_output = bool((output.get("parameters") or {}).get("binary_data", binary_output))
    request_id = header.get("id")
    return HttpInferRequest(id=str(request_id) if request_id is not None else None,
                            fields=tensor_fields(parameters, tensors), text_rank=text_rank,
                            binary_output=binary_output)


def http_infer_response(model: str, version: str, request: HttpInferRequest,
                        text: str) -> tuple[bytes, dict[str, str]]:
    """The response body and headers (binary data extension when asked for)."""
    output: dict[str, Any] = {"name": "text_output", "datatype": "BYTES", "shape": [1] * request.text_rank}
    raw = b""
    if request.binary_output:
        raw = text_tensor(text)
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = [text]
    payload: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": [output]}
    if request.id is not None:
        payload["id"] = request.id
    header = json.dumps(payload, separators=(",", ":")).encode()
    if not raw:
        return header, {"content-type": "application/json"}
    return header + raw, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
