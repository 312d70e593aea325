"""End to end with the real SmolLM2-135M-Instruct (the bundled GGUF): one runtime process, checked through
the official openai client and tritonclient's gRPC stream. Slow-ish: loading the model takes seconds."""

from __future__ import annotations

import json
import queue
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as grpcclient
from bundled_model import requires_smollm2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    requires_smollm2,
]
MODEL = "smollm2"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def smollm2(runtime_factory: Any) -> Any:
    return runtime_factory(None, "--max-model-len", "1024", "--threads", "2", "--slo-ttft-ms", "700",
                           name=MODEL, grpc=True, ready_timeout=180)


def test_chat_answers_through_the_openai_client_streamed_and_not(smollm2: Any) -> None:
    api = openai.OpenAI(base_url=smollm2.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    whole = api.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0)
    answer = whole.choices[0].message.content
    assert "Paris" in answer
    chunks = list(api.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=24, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    if whole.choices[0].finish_reason == "stop":  # EOS ended it: the text must not carry the EOS marker
        assert "<|im_end|>" not in answer


def test_grpc_stream_matches_the_openai_completion(smollm2: Any) -> None:
    prompt = "The three primary colours are"
    reference = httpx.post(smollm2.url + "/v1/completions", json={
        "model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": True}, timeout=60)
    expected = reference.json()["choices"][0]["text"]
    client = grpcclient.InferenceServerClient(smollm2.grpc_url)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        inputs = []
        for name, datatype, value, dtype in [
                ("text_input", "BYTES", prompt.encode(), np.object_), ("stream", "BOOL", True, bool),
                ("sampling_parameters", "BYTES",
                 json.dumps({"max_tokens": "12", "temperature": "0", "ignore_eos": "true"}).encode(), np.object_)]:
            tensor = grpcclient.InferInput(name, [1], datatype)
            tensor.set_data_from_numpy(np.array([value], dtype=dtype))
            inputs.append(tensor)
        client.async_stream_infer(MODEL, inputs, request_id="colours")
        pieces = []
        for _ in range(12):
            result, error = results.get(timeout=60)
            assert error is None
            pieces.append(result.as_numpy("text_output")[0].decode())
        assert result.get_response().parameters["triton_final_response"].bool_param
        assert "".join(pieces) == expected
    finally:
        client.stop_stream()
        client.close()
    metrics = httpx.get(smollm2.url + "/metrics").text
    assert f'sloserve:time_to_first_token_seconds_bucket{{le="0.7",model_name="{MODEL}"}}' in metrics
