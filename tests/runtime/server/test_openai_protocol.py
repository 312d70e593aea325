"""Where this server's OpenAI API must answer as OpenAI's does for clients written against OpenAI: status
codes and error codes they branch on (404 model_not_found, 405, context_length_exceeded), stream_options,
n > 1 (streamed or not, seeded choices), top_p 0, roles and messages, stop lists, a body without a
Content-Type. Real `openai` client and httpx against the tiny runtime of conftest (served as "tiny")."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

TINY_NAME = "tiny"
HI = [{"role": "user", "content": "hi"}]
LONG = "word " * 600  # > 512 tokens, the fixture's --max-model-len

pytestmark = pytest.mark.timeout(120)


def client(runtime: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_a_404_model_not_found_on_both_endpoints(tiny_runtime: Any, stream: bool) -> None:
    api = client(tiny_runtime)
    calls = {"chat": lambda: api.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=2, stream=stream),
             "completions": lambda: api.completions.create(model="gpt-4o", prompt="hi", max_tokens=2, stream=stream)}
    for endpoint, call in calls.items():
        with pytest.raises(openai.NotFoundError) as unknown:
            call()
        body = unknown.value.body
        assert body["type"] == "invalid_request_error" and body["code"] == "model_not_found", endpoint
        assert body["param"] == "model" and "'gpt-4o'" in body["message"] and "'tiny'" in body["message"]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/completions", "POST"), ("GET", "/v1/chat/completions", "POST"),
    ("PUT", "/v1/chat/completions", "POST"), ("POST", "/v1/models", "GET"), ("DELETE", "/v1/models/tiny", "GET"),
])
def test_wrong_method_on_a_served_path_is_a_405_in_openai_shape(tiny_runtime: Any, method: str, path: str,
                                                                allow: str) -> None:
    response = httpx.request(method, tiny_runtime.url + path, timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert method in error["message"] and allow in error["message"]


def test_wrong_method_through_the_openai_client_and_kserve_shape_on_v2(tiny_runtime: Any) -> None:
    with pytest.raises(openai.APIStatusError) as wrong:
        client(tiny_runtime).get("/chat/completions", cast_to=object)
    assert wrong.value.status_code == 405 and wrong.value.body["code"] == "method_not_allowed"
    v2 = httpx.get(tiny_runtime.url + "/v2/models/tiny/infer", timeout=30)
    assert v2.status_code == 405 and "GET" in v2.json()["error"]  # KServe's {"error": "..."}
    assert httpx.post(tiny_runtime.url + "/v1/embeddings", json={}, timeout=30).status_code == 404


@pytest.mark.parametrize(("path", "fields"), [
    ("/v1/chat/completions", {"messages": HI}), ("/v1/completions", {"prompt": "hi"}),
])
def test_stream_options_without_stream_is_a_400_naming_it(tiny_runtime: Any, path: str, fields: dict) -> None:
    for stream in (False, None):
        body = {"model": TINY_NAME, "max_tokens": 2, "stream": stream, "stream_options": {"include_usage": True},
                **fields}
        response = httpx.post(tiny_runtime.url + path, json=body, timeout=30)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "stream_options" and "'stream'" in error["message"]


def test_streamed_n_choices_with_usage_through_the_openai_iterator(tiny_runtime: Any) -> None:
    """Each choice streams under its own index; the last chunk has empty choices and the usage, which counts
    the prompt once and the completion tokens of every choice."""
    api = client(tiny_runtime)
    chunks = list(api.chat.completions.create(model=TINY_NAME, messages=HI, max_tokens=4, n=3, stream=True,
                                              stream_options={"include_usage": True},
                                              extra_body={"ignore_eos": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks[:-1])
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in chunks[:-1] if c.choices[0].finish_reason}
    assert finished == {0: "length", 1: "length", 2: "length"}
    roles = [c.choices[0].index for c in chunks[:-1] if c.choices[0].delta.role == "assistant"]
    assert sorted(roles) == [0, 1, 2]
    single = api.chat.completions.create(model=TINY_NAME, messages=HI, max_tokens=4)
    assert chunks[-1].usage.prompt_tokens == single.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens == 12


def test_n_choices_are_sampled_apart_and_a_seed_reproduces_them(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)

    def texts(n: int, seed: int) -> list[str]:
        answer = api.chat.completions.create(model=TINY_NAME, messages=HI, max_tokens=8, n=n, seed=seed,
                                             temperature=1.0, extra_body={"ignore_eos": True})
        assert [c.index for c in answer.choices] == list(range(n))
        assert answer.usage.completion_tokens == 8 * n
        return [c.message.content for c in answer.choices]

    first = texts(4, seed=7)
    assert len(set(first)) > 1  # four identical samples from a near-uniform tiny model: seeds were shared
    assert texts(4, seed=7) == first
    assert texts(1, seed=7) == first[:1]  # choice 0 is what the same request with n=1 gets


def test_completion_batch_times_n_orders_choices_by_prompt_then_choice(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)
    prompts = ["The quick brown fox", "Once upon a time"]
    greedy = [api.completions.create(model=TINY_NAME, prompt=p, max_tokens=5, temperature=0).choices[0].text
              for p in prompts]
    batch = api.completions.create(model=TINY_NAME, prompt=prompts, max_tokens=5, temperature=0, n=2)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert [c.text for c in batch.choices] == [greedy[0], greedy[0], greedy[1], greedy[1]]
    one_each = api.completions.create(model=TINY_NAME, prompt=prompts, max_tokens=5, temperature=0)
    assert batch.usage.prompt_tokens == one_each.usage.prompt_tokens


def test_prompt_beyond_the_context_is_context_length_exceeded(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)
    cases = [(lambda: api.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": LONG}]),
              "messages"),
             (lambda: api.completions.create(model=TINY_NAME, prompt=LONG), "prompt"),
             (lambda: api.chat.completions.create(model=TINY_NAME, messages=HI, max_completion_tokens=100000),
              "max_completion_tokens"),
             (lambda: api.completions.create(model=TINY_NAME, prompt="hi", max_tokens=100000), "max_tokens")]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as too_long:
            call()
        assert too_long.value.body["code"] == "context_length_exceeded" and too_long.value.body["param"] == param
        assert "512" in too_long.value.body["message"]


def test_top_p_zero_keeps_only_the_most_likely_token(tiny_runtime: Any) -> None:
    """OpenAI takes top_p 0; it leaves one candidate, so sampling at temperature 1 is greedy."""
    api = client(tiny_runtime)

    def text(**fields: Any) -> str:
        return api.chat.completions.create(model=TINY_NAME, messages=HI, max_tokens=8,
                                           extra_body={"ignore_eos": True}, **fields).choices[0].message.content

    assert text(top_p=0, temperature=1.0) == text(temperature=0)


def test_conversation_shapes_clients_send(tiny_runtime: Any) -> None:
    """A name on a message, an assistant turn last (answered with a new turn, as OpenAI does), and an
    assistant tool call with its tool result from an earlier exchange all make prompts, not errors."""
    api = client(tiny_runtime)
    history = [
        [{"role": "user", "content": "hi", "name": "alice"}],
        [*HI, {"role": "assistant", "content": "Hello! How"}],
        [*HI, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}],
    ]
    for messages in history:
        answer = api.chat.completions.create(model=TINY_NAME, messages=messages, max_tokens=2)
        assert answer.choices[0].message.role == "assistant" and answer.usage.completion_tokens >= 1


def test_every_stop_string_of_a_long_list_counts(tiny_runtime: Any) -> None:
    """OpenAI caps `stop` at 4; this server takes up to 16 (as vLLM, uncapped) and honours the last one too."""
    api = client(tiny_runtime)
    fields = {"model": TINY_NAME, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0,
              "extra_body": {"ignore_eos": True}}
    text = api.completions.create(**fields).choices[0].text
    marker = text[len(text) // 2:len(text) // 2 + 3]
    stopped = api.completions.create(**fields, stop=["zq1", "zq2", "zq3", "zq4", marker]).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == text[:text.find(marker)]
    with pytest.raises(openai.BadRequestError) as too_many:
        api.completions.create(**fields, stop=[f"zq{i}" for i in range(17)])
    assert too_many.value.body["param"] == "stop"


def test_refusals_say_why(tiny_runtime: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(tiny_runtime).chat.completions.create(model=TINY_NAME, messages=HI, logprobs=True)
    assert refused.value.body["param"] == "logprobs" and "not returned" in refused.value.body["message"]


def test_a_json_body_without_content_type_is_read(tiny_runtime: Any) -> None:
    """curl -d without -H sends form encoding; the body is still the JSON the user typed."""
    body = json.dumps({"model": TINY_NAME, "prompt": "hi", "max_tokens": 2}).encode()
    for headers in ({}, {"content-type": "application/x-www-form-urlencoded"}):
        response = httpx.post(tiny_runtime.url + "/v1/completions", content=body, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
