"""KServe v2 / Triton protocol of a real runtime process (tiny model), driven by the real tritonclient
(grpc: start_stream / async_stream_infer / infer; http: health and metadata) and raw HTTP for generate."""

from __future__ import annotations

import json
import queue
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.timeout(120)
MODEL = "tiny"
PROMPT = "The river flows"


def greedy_completion(runtime: Any, max_tokens: int, prompt: str = PROMPT) -> str:
    """The reference text: the OpenAI endpoint's greedy output for the same prompt."""
    response = httpx.post(runtime.url + "/v1/completions", json={
        "model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True})
    return response.json()["choices"][0]["text"]


def vllm_backend_inputs(prompt: str, stream: bool, sampling: dict, exclude_input: bool | None = None) -> list:
    """The tensors a client of Triton's vLLM backend sends."""
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_))
    stream_flag = grpcclient.InferInput("stream", [1], "BOOL")
    stream_flag.set_data_from_numpy(np.array([stream], dtype=bool))
    params = grpcclient.InferInput("sampling_parameters", [1], "BYTES")
    params.set_data_from_numpy(np.array([json.dumps(sampling).encode()], dtype=np.object_))
    inputs = [text, stream_flag, params]
    if exclude_input is not None:
        exclude = grpcclient.InferInput("exclude_input_in_output", [1], "BOOL")
        exclude.set_data_from_numpy(np.array([exclude_input], dtype=bool))
        inputs.append(exclude)
    return inputs


def trtllm_inputs(prompt: str, max_tokens: int, stream: bool) -> list:
    """The tensors a client of the TensorRT-LLM ensemble sends (batch dimension included)."""
    def tensor(name: str, datatype: str, value: Any, dtype: Any) -> Any:
        item = grpcclient.InferInput(name, [1, 1], datatype)
        item.set_data_from_numpy(np.array([[value]], dtype=dtype))
        return item

    return [tensor("text_input", "BYTES", prompt.encode(), np.object_),
            tensor("max_tokens", "INT32", max_tokens, np.int32),
            tensor("bad_words", "BYTES", b"", np.object_),
            tensor("stop_words", "BYTES", b"", np.object_),
            tensor("stream", "BOOL", stream, bool),
            tensor("temperature", "FP32", 0.0, np.float32),
            tensor("top_k", "INT32", 1, np.int32),
            tensor("top_p", "FP32", 1.0, np.float32),
            tensor("beam_width", "INT32", 1, np.int32),
            tensor("random_seed", "UINT64", 7, np.uint64)]


def collect_stream(client: Any, results: queue.Queue, request_id: str, timeout: float = 30) -> list:
    """Responses for one request until the one flagged triton_final_response (bounded by count and time)."""
    responses = []
    for _ in range(10_000):
        result, error = results.get(timeout=timeout)
        if error is not None:
            raise error
        if result.get_response().id != request_id:
            continue
        responses.append(result)
        if result.get_response().parameters["triton_final_response"].bool_param:
            return responses
    raise AssertionError("no final response")


@pytest.fixture
def stream_client(tiny_runtime: Any) -> Any:
    client = grpcclient.InferenceServerClient(tiny_runtime.grpc_url)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    yield client, results
    client.stop_stream(cancel_requests=True)
    client.close()


def text_of(result: Any) -> str:
    array = result.as_numpy("text_output")
    return b"".join(array.reshape(-1)).decode() if array is not None else ""


def test_http_health_and_metadata_through_tritonclient(tiny_runtime: Any) -> None:
    client = httpclient.InferenceServerClient(tiny_runtime.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert {"text_input", "stream", "sampling_parameters", "max_tokens"} <= {i["name"] for i in metadata["inputs"]}
    assert [o["name"] for o in metadata["outputs"]] == ["text_output"]
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")
    assert not client.is_model_ready("no-such-model")
    client.close()


def test_http_generate_with_vllm_style_string_parameters(tiny_runtime: Any) -> None:
    expected = greedy_completion(tiny_runtime, 8)
    url = f"{tiny_runtime.url}/v2/models/{MODEL}/generate"
    params = {"max_tokens": "8", "temperature": "0", "ignore_eos": "true"}
    with_prompt = httpx.post(url, json={"text_input": PROMPT, "parameters": params}).json()
    assert with_prompt == {"model_name": MODEL, "model_version": "1", "text_output": PROMPT + expected}
    without = httpx.post(url, json={"text_input": PROMPT, "parameters": {**params, "exclude_input_in_output": True}})
    assert without.json()["text_output"] == expected
    # TensorRT-LLM ensemble style: fields at the top level, the ones we cannot use accepted and ignored.
    ensemble = httpx.post(url, json={"text_input": PROMPT, "max_tokens": 8, "temperature": 0.0, "bad_words": "",
                                     "stop_words": "", "ignore_eos": True, "exclude_input_in_output": True})
    assert ensemble.json()["text_output"] == expected


def test_http_generate_stream_sends_one_event_per_token(tiny_runtime: Any) -> None:
    expected = greedy_completion(tiny_runtime, 8)
    response = httpx.post(f"{tiny_runtime.url}/v2/models/{MODEL}/generate_stream",
                          json={"text_input": PROMPT, "parameters": {"max_tokens": 8, "temperature": 0,
                                                                      "ignore_eos": True}})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(block[6:]) for block in response.text.split("\n\n") if block.startswith("data: ")]
    assert len(events) == 8
    assert "".join(e["text_output"] for e in events) == expected


@pytest.mark.parametrize(("path", "payload", "status"), [
    ("/v2/models/no-such-model/generate", {"text_input": "hi"}, 404),
    (f"/v2/models/{MODEL}/generate", {"parameters": {"max_tokens": 4}}, 400),
    (f"/v2/models/{MODEL}/generate", {"text_input": "hi", "parameters": {"temperature": "hot"}}, 400),
    (f"/v2/models/{MODEL}/generate", {"text_input": "hi", "max_tokens": 0}, 400),
    (f"/v2/models/{MODEL}/generate", {"text_input": "hi", "parameters": {"seed": 2**64}}, 400),  # not a 500
    (f"/v2/models/{MODEL}/generate_stream", {"text_input": "hi", "parameters": "not an object"}, 400),
    (f"/v2/models/{MODEL}/generate", "{broken json", 400),
])
def test_http_generate_errors(tiny_runtime: Any, path: str, payload: Any, status: int) -> None:
    content = payload if isinstance(payload, str) else json.dumps(payload)
    response = httpx.post(tiny_runtime.url + path, content=content)
    assert response.status_code == status
    assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_grpc_health_and_metadata(tiny_runtime: Any) -> None:
    client = grpcclient.InferenceServerClient(tiny_runtime.grpc_url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert not client.is_model_ready("no-such-model")
    metadata = client.get_model_metadata(MODEL)
    assert metadata.name == MODEL and "text_input" in [i.name for i in metadata.inputs]
    assert client.get_model_config(MODEL).config.model_transaction_policy.decoupled
    with pytest.raises(InferenceServerException, match="no-such-model"):
        client.get_model_metadata("no-such-model")
    client.close()


def test_grpc_stream_vllm_backend_one_response_per_token(tiny_runtime: Any, stream_client: Any) -> None:
    client, results = stream_client
    expected = greedy_completion(tiny_runtime, 10)
    client.async_stream_infer(MODEL, vllm_backend_inputs(
        PROMPT, True, {"max_tokens": "10", "temperature": "0", "ignore_eos": "true"}), request_id="vllm-1")
    responses = collect_stream(client, results, "vllm-1")
    assert len(responses) == 10
    flags = [r.get_response().parameters["triton_final_response"].bool_param for r in responses]
    assert flags == [False] * 9 + [True]
    assert "".join(text_of(r) for r in responses) == expected


def test_grpc_stream_empty_final_response_and_non_streamed_request(tiny_runtime: Any,
                                                                   stream_client: Any) -> None:
    client, results = stream_client
    expected = greedy_completion(tiny_runtime, 5)
    sampling = {"max_tokens": 5, "temperature": 0, "ignore_eos": True}
    client.async_stream_infer(MODEL, vllm_backend_inputs(PROMPT, True, sampling), request_id="empty-final",
                              enable_empty_final_response=True)
    responses = collect_stream(client, results, "empty-final")
    assert len(responses) == 6 and responses[-1].as_numpy("text_output") is None
    assert "".join(text_of(r) for r in responses[:-1]) == expected
    # stream=false on the stream: one response holding prompt + output (the vLLM backend's default).
    client.async_stream_infer(MODEL, vllm_backend_inputs(PROMPT, False, sampling), request_id="whole")
    (whole,) = collect_stream(client, results, "whole")
    assert text_of(whole) == PROMPT + expected


def test_grpc_trtllm_ensemble_tensors_unary_and_streamed(tiny_runtime: Any, stream_client: Any) -> None:
    expected = greedy_completion(tiny_runtime, 6)
    client = grpcclient.InferenceServerClient(tiny_runtime.grpc_url)
    result = client.infer(MODEL, trtllm_inputs(PROMPT, 6, stream=False))
    assert result.as_numpy("text_output").shape == (1, 1)
    # The ensemble's tokens may include EOS (ignore_eos is not one of its tensors), so compare prefixes.
    text = text_of(result)
    assert text.startswith(PROMPT) and expected.startswith(text[len(PROMPT):])
    client.close()
    streamer, results = stream_client
    streamer.async_stream_infer(MODEL, trtllm_inputs(PROMPT, 6, stream=True), request_id="trt")
    responses = collect_stream(streamer, results, "trt")
    assert 1 <= len(responses) <= 6 and "".join(text_of(r) for r in responses) == text[len(PROMPT):]


def test_grpc_errors_map_to_triton_shapes(tiny_runtime: Any, stream_client: Any) -> None:
    client = grpcclient.InferenceServerClient(tiny_runtime.grpc_url)
    with pytest.raises(InferenceServerException, match="does not exist") as unknown:
        client.infer("no-such-model", trtllm_inputs(PROMPT, 4, stream=False))
    assert "NOT_FOUND" in str(unknown.value.status())
    with pytest.raises(InferenceServerException, match="max_tokens") as invalid:
        client.infer(MODEL, trtllm_inputs(PROMPT, 0, stream=False))
    assert "INVALID_ARGUMENT" in str(invalid.value.status())
    with pytest.raises(InferenceServerException, match="seed") as seed:  # beyond what torch seeds with
        client.infer(MODEL, vllm_backend_inputs(PROMPT, False, {"max_tokens": 2, "seed": str(2**64)}))
    assert "INVALID_ARGUMENT" in str(seed.value.status())
    client.close()
    streamer, results = stream_client
    bad = vllm_backend_inputs(PROMPT, True, {"temperature": "warm"})
    streamer.async_stream_infer(MODEL, bad, request_id="bad")
    _, error = results.get(timeout=30)
    assert isinstance(error, InferenceServerException) and "temperature" in str(error)
    # The stream survives an error: the next request on it is served.
    streamer.async_stream_infer(MODEL, vllm_backend_inputs(PROMPT, True, {"max_tokens": 2, "ignore_eos": True}),
                                request_id="after")
    assert len(collect_stream(streamer, results, "after")) == 2


def test_cancelled_grpc_stream_aborts_the_request(tiny_runtime: Any) -> None:
    def idle(state: dict) -> bool:
        return state["num_running"] == 0 and state["num_free_blocks"] == state["num_total_blocks"]

    def aborted() -> float:
        series = f'sloserve:request_success_total{{finished_reason="abort",model_name="{MODEL}"}} '
        lines = httpx.get(tiny_runtime.url + "/metrics").text.splitlines()
        return float(next(line for line in lines if line.startswith(series)).split()[-1])

    tiny_runtime.wait_engine(idle)
    aborted_before = aborted()
    client = grpcclient.InferenceServerClient(tiny_runtime.grpc_url)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer(MODEL, vllm_backend_inputs(PROMPT, True, {"max_tokens": 480, "ignore_eos": True}),
                              request_id="long")
    for _ in range(3):
        result, error = results.get(timeout=30)
        assert error is None
    assert tiny_runtime.engine_state()["num_running"] == 1
    client.stop_stream(cancel_requests=True)
    tiny_runtime.wait_engine(idle, timeout=10)
    assert aborted() == aborted_before + 1  # cut short, not run to its 480 tokens
    client.close()


def http_text_input(prompt: str, binary: bool) -> Any:
    text = httpclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([prompt.encode()], dtype=np.object_), binary_data=binary)
    return text


def discover_ready_model(models: list[dict]) -> str:
    """What a listing client does: the first model the index says is READY."""
    return next(m["name"] for m in models if m.get("state") == "READY")


def test_http_client_discovers_the_model_by_listing_then_infers(tiny_runtime: Any) -> None:
    expected = greedy_completion(tiny_runtime, 6)
    client = httpclient.InferenceServerClient(tiny_runtime.url.removeprefix("http://"))
    index = client.get_model_repository_index()
    assert index == [{"name": MODEL, "version": "1", "state": "READY", "reason": ""}]
    name = discover_ready_model(index)
    config = client.get_model_config(name)
    assert config["name"] == MODEL and config["model_transaction_policy"]["decoupled"] is True
    inputs = {i["name"]: i for i in config["input"]}
    assert inputs["text_input"]["data_type"] == "TYPE_STRING" and not inputs["text_input"]["optional"]
    assert inputs["max_tokens"]["data_type"] == "TYPE_INT32" and inputs["max_tokens"]["optional"]
    assert [o["name"] for o in config["output"]] == ["text_output"]
    # tritonclient's defaults: binary tensor data both ways; sampling as request parameters.
    result = client.infer(name, [http_text_input(PROMPT, binary=True)], request_id="listed-1",
                          parameters={"max_tokens": 6, "temperature": 0, "ignore_eos": True})
    assert result.get_response()["id"] == "listed-1"
    assert result.as_numpy("text_output").tolist() == [(PROMPT + expected).encode()]
    with pytest.raises(InferenceServerException) as unknown:
        client.get_model_config("no-such-model")
    assert unknown.value.status() == "404"
    client.close()


def test_http_infer_json_tensors_and_ensemble_inputs(tiny_runtime: Any) -> None:
    expected = greedy_completion(tiny_runtime, 5)
    client = httpclient.InferenceServerClient(tiny_runtime.url.removeprefix("http://"))
    # All JSON (no binary extension): data as strings, the output asked for as JSON too.
    sampling = httpclient.InferInput("sampling_parameters", [1], "BYTES")
    sampling.set_data_from_numpy(np.array([json.dumps({"max_tokens": "5", "temperature": "0",
                                                       "ignore_eos": "true"}).encode()], dtype=np.object_),
                                 binary_data=False)
    exclude = httpclient.InferInput("exclude_input_in_output", [1], "BOOL")
    exclude.set_data_from_numpy(np.array([True]), binary_data=False)
    output = httpclient.InferRequestedOutput("text_output", binary_data=False)
    result = client.infer(MODEL, [http_text_input(PROMPT, binary=False), sampling, exclude], outputs=[output])
    assert result.get_response()["outputs"][0]["data"] == [expected]
    assert result.as_numpy("text_output").tolist() == [expected]
    # The TensorRT-LLM ensemble's tensors ([1, 1], binary): text_output keeps the rank.
    tensors = []
    for name, datatype, value, dtype in [("text_input", "BYTES", PROMPT.encode(), np.object_),
                                         ("max_tokens", "INT32", 5, np.int32), ("top_k", "INT32", 1, np.int32),
                                         ("temperature", "FP32", 0.0, np.float32),
                                         ("stop_words", "BYTES", b"", np.object_)]:
        tensor = httpclient.InferInput(name, [1, 1], datatype)
        tensor.set_data_from_numpy(np.array([[value]], dtype=dtype))
        tensors.append(tensor)
    array = client.infer(MODEL, tensors).as_numpy("text_output")
    assert array.shape == (1, 1)
    text = array.item().decode()
    assert text.startswith(PROMPT) and expected.startswith(text[len(PROMPT):])  # may stop at EOS
    client.close()


@pytest.mark.parametrize(("path", "body", "headers", "status", "message"), [
    ("/v2/models/no-such-model/infer", {"inputs": []}, {}, 404, "does not exist"),
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1], "data": [1]}]},
     {}, 400, "image"),
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "text_input", "datatype": "INT32", "shape": [1],
                                               "data": [1]}]}, {}, 400, "BYTES"),
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1],
                                               "data": ["hi"]}], "parameters": {"max_tokens": 0}}, {}, 400,
     "max_tokens"),
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1],
                                               "parameters": {"binary_data_size": 64}}]}, {}, 400,
     "binary_data_size"),
    (f"/v2/models/{MODEL}/infer", {"inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1],
                                               "data": ["hi"]}], "outputs": [{"name": "logits"}]}, {}, 400,
     "logits"),
    (f"/v2/models/{MODEL}/infer", "{not json", {}, 400, "JSON"),
    (f"/v2/models/{MODEL}/infer", {"inputs": []}, {"Inference-Header-Content-Length": "9999"}, 400,
     "Inference-Header-Content-Length"),
])
def test_http_infer_errors(tiny_runtime: Any, path: str, body: Any, headers: dict, status: int,
                           message: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(tiny_runtime.url + path, content=content, headers=headers)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_http_repository_index_ready_filter_and_bad_body(tiny_runtime: Any) -> None:
    url = tiny_runtime.url + "/v2/repository/index"
    assert httpx.post(url, json={"ready": True}).json()[0]["name"] == MODEL
    assert httpx.post(url, content="").json()[0]["state"] == "READY"
    assert httpx.post(url, content="[1]").status_code == 400


def test_grpc_client_discovers_the_model_by_listing_then_infers(tiny_runtime: Any) -> None:
    expected = greedy_completion(tiny_runtime, 4)
    client = grpcclient.InferenceServerClient(tiny_runtime.grpc_url)
    index = client.get_model_repository_index(as_json=True)
    assert index["models"] == [{"name": MODEL, "version": "1", "state": "READY"}]  # empty reason is omitted
    assert [m.name for m in client.get_model_repository_index().models] == [MODEL]
    assert [m.name for m in client.get_model_repository_index(as_json=False).models] == [MODEL]
    name = discover_ready_model(index["models"])
    config = client.get_model_config(name, as_json=True)["config"]
    assert config["backend"] == "sloserve" and config["model_transaction_policy"] == {"decoupled": True}
    assert {"name": "text_input", "data_type": "TYPE_STRING", "dims": ["1"]} == config["input"][0]
    result = client.infer(name, vllm_backend_inputs(PROMPT, False, {"max_tokens": 4, "temperature": 0,
                                                                     "ignore_eos": True}, exclude_input=True))
    assert text_of(result) == expected
    client.close()


def test_a_version_other_than_1_is_an_unknown_model_on_both_transports(tiny_runtime: Any) -> None:
    """Triton answers a missing version with "unknown model"; answering from version 1 would hide that the
    client addressed something else."""
    http = httpclient.InferenceServerClient(tiny_runtime.url.removeprefix("http://"))
    grpc = grpcclient.InferenceServerClient(tiny_runtime.grpc_url)
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
    for client, inputs in ((http, [http_text_input(PROMPT, binary=False)]), (grpc, [text])):
        with pytest.raises(InferenceServerException, match="version 2") as unknown:
            client.infer(MODEL, inputs, model_version="2", parameters={"max_tokens": 2})
        assert str(unknown.value.status()) in ("404", "StatusCode.NOT_FOUND")
        with pytest.raises(InferenceServerException, match="version 2"):
            client.get_model_metadata(MODEL, model_version="2")
        assert client.is_model_ready(MODEL, "1") and not client.is_model_ready(MODEL, "2")
        assert client.infer(MODEL, inputs, model_version="1", parameters={"max_tokens": 2}).as_numpy("text_output")
    response = httpx.post(f"{tiny_runtime.url}/v2/models/{MODEL}/versions/3/generate", json={"text_input": "hi"})
    assert response.status_code == 404 and "version 3" in response.json()["error"]
    http.close()
    grpc.close()
