"""What well-known OpenAI clients send that a plain chat request does not: model retrieval, endpoints this
server lacks, features it does not have (tools, JSON mode, image parts, logprobs), the `developer` role,
fields serialized as null, and seeds beyond 64 bits. Each gets a normal answer or an OpenAI-shaped 4xx,
never a 500 or a silently ignored request. Real `openai` client and httpx against the tiny runtime."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

TINY_NAME = "tiny"  # the name conftest's tiny_runtime serves under
HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather",
                                           "parameters": {"type": "object", "properties": {}}}}]

pytestmark = pytest.mark.timeout(120)


def client(runtime: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def test_models_retrieve_and_unknown_endpoints_are_openai_shaped(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)
    model = api.models.retrieve(TINY_NAME)
    assert model.id == TINY_NAME and model.object == "model"
    with pytest.raises(openai.NotFoundError) as unknown_model:
        api.models.retrieve("gpt-4o")
    assert unknown_model.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError) as embeddings:
        api.embeddings.create(model=TINY_NAME, input="hi")
    assert embeddings.value.body["type"] == "invalid_request_error"
    assert "/v1/embeddings" in embeddings.value.body["message"]


REFUSED = [
    ("json mode", {"response_format": {"type": "json_object"}}, "response_format"),
    ("json schema", {"response_format": {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": {"type": "object"}}}},
     "response_format"),
    ("tools", {"tools": TOOLS}, "tools"),
    ("tools required", {"tools": TOOLS, "tool_choice": "required"}, "tools"),
    ("tool_choice without tools", {"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tools"),
    ("legacy functions", {"functions": [{"name": "f", "parameters": {}}]}, "functions"),
    ("top_logprobs", {"top_logprobs": 2}, "top_logprobs"),
    ("logprobs", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ("n above OpenAI's limit", {"n": 129}, "n"),
    ("audio output", {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("audio modality", {"modalities": ["audio"]}, "modalities"),
    ("web search", {"web_search_options": {}}, "web_search_options"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ("user without content", {"messages": [{"role": "user"}]}, "messages"),
    ("stream_options without stream", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("penalty", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("image part", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}, "messages"),
]


@pytest.mark.parametrize(("case", "fields", "param"), REFUSED, ids=[c[0] for c in REFUSED])
def test_chat_features_this_server_lacks_are_refused_not_ignored(tiny_runtime: Any, case: str, fields: dict,
                                                                 param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(tiny_runtime).chat.completions.create(**{"model": TINY_NAME, "messages": HI, "max_tokens": 2,
                                                        **fields})
    assert refused.value.body["param"] == param and refused.value.body["type"] == "invalid_request_error"


def test_chat_fields_that_ask_for_nothing_are_accepted(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)
    for fields in ({"response_format": {"type": "text"}}, {"tools": TOOLS, "tool_choice": "none"},
                   {"tools": [], "tool_choice": "auto"}, {"user": "u-1", "metadata": {"team": "a"}, "store": False},
                   {"frequency_penalty": 0, "presence_penalty": 0.0, "logprobs": False, "n": 1},
                   {"modalities": ["text"], "service_tier": "auto", "reasoning_effort": "low",
                    "prediction": {"type": "content", "content": "x"}, "stream_options": None},
                   {"extra_body": {"a_field_from_next_year": {"x": 1}}}):
        answer = api.chat.completions.create(model=TINY_NAME, messages=HI, max_completion_tokens=2, **fields)
        assert answer.usage.completion_tokens >= 1, fields


def test_developer_role_and_content_parts_build_the_same_prompt(tiny_runtime: Any) -> None:
    """`developer` is OpenAI's newer name for `system`; text parts are the string they join to."""
    api = client(tiny_runtime)

    def prompt_tokens(messages: list[dict]) -> int:
        return api.chat.completions.create(model=TINY_NAME, messages=messages, max_tokens=1).usage.prompt_tokens

    plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    developer = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    parts = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
             {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "colour."}]}]
    assert prompt_tokens(developer) == prompt_tokens(plain) == prompt_tokens(parts)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": HI, "n": None, "stream": None, "stop": None, "tools": None,
                              "response_format": None, "top_logprobs": None, "seed": None}),
    ("/v1/completions", {"prompt": "hi", "n": None, "stream": None, "echo": None, "best_of": None,
                         "suffix": None, "logprobs": None}),
])
def test_fields_sent_as_null_mean_unset(tiny_runtime: Any, path: str, body: dict) -> None:
    response = httpx.post(tiny_runtime.url + path, json={"model": TINY_NAME, "max_tokens": 2, **body}, timeout=30)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_seed_beyond_64_bits_is_a_400_and_the_extremes_work(tiny_runtime: Any, path: str) -> None:
    body = {"model": TINY_NAME, "max_tokens": 2, "messages": HI, "prompt": "hi"}
    body.pop("prompt" if "chat" in path else "messages")
    for seed in (2**64, -(2**63) - 1, 10**30):
        response = httpx.post(tiny_runtime.url + path, json={**body, "seed": seed}, timeout=30)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "seed"
    for seed in (2**64 - 1, -(2**63), 0):
        response = httpx.post(tiny_runtime.url + path, json={**body, "seed": seed}, timeout=30)
        assert response.status_code == 200, response.text
