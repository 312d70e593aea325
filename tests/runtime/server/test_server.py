"""OpenAI API of a real runtime process (tiny random-weight model): responses, streaming through the official
`openai` client and raw SSE, every error case, and that a client hanging up frees its KV blocks."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import openai
import pytest

TINY_NAME = "tiny"  # the name conftest's tiny_runtime serves under

pytestmark = pytest.mark.timeout(120)


def client(runtime: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=runtime.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def post(runtime: Any, path: str, body: dict | str) -> httpx.Response:
    content = body if isinstance(body, str) else json.dumps(body)
    return httpx.post(runtime.url + path, content=content, headers={"content-type": "application/json"},
                      timeout=30)


def sse_events(response: httpx.Response) -> list[str]:
    """The data payloads of an SSE body, checking the framing on the way."""
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        events.append(block[len("data: "):])
    return events


def test_health_ready_and_models(tiny_runtime: Any) -> None:
    assert httpx.get(tiny_runtime.url + "/health").status_code == 200
    assert httpx.get(tiny_runtime.url + "/ready").json()["ready"] is True
    models = client(tiny_runtime).models.list()
    assert [m.id for m in models.data] == [TINY_NAME]


def test_completion_counts_tokens_and_is_deterministic_when_greedy(tiny_runtime: Any) -> None:
    body = {"model": TINY_NAME, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0,
            "ignore_eos": True}
    first, second = post(tiny_runtime, "/v1/completions", body), post(tiny_runtime, "/v1/completions", body)
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["object"] == "text_completion" and data["model"] == TINY_NAME
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 12
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 12
    assert data["choices"][0]["text"] == second.json()["choices"][0]["text"]


def test_token_id_prompt_and_batch_of_prompts(tiny_runtime: Any) -> None:
    single = post(tiny_runtime, "/v1/completions", {"model": TINY_NAME, "prompt": "Hello world",
                                                     "max_tokens": 5, "temperature": 0, "ignore_eos": True})
    batch = post(tiny_runtime, "/v1/completions", {"model": TINY_NAME, "prompt": ["Hello world", "Goodbye"],
                                                    "max_tokens": 5, "temperature": 0, "ignore_eos": True})
    choices = sorted(batch.json()["choices"], key=lambda c: c["index"])
    assert [c["index"] for c in choices] == [0, 1]
    assert choices[0]["text"] == single.json()["choices"][0]["text"]
    assert batch.json()["usage"]["completion_tokens"] == 10


def test_openai_client_streams_chat_with_usage(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    extra = {"ignore_eos": True}
    whole = api.chat.completions.create(model=TINY_NAME, messages=messages, max_tokens=10, temperature=0,
                                        extra_body=extra)
    stream = api.chat.completions.create(model=TINY_NAME, messages=messages, max_tokens=10, temperature=0,
                                         stream=True, stream_options={"include_usage": True}, extra_body=extra)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_client_streams_completions(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)
    whole = api.completions.create(model=TINY_NAME, prompt="Once upon a time", max_tokens=8, temperature=0,
                                   extra_body={"ignore_eos": True})
    pieces = [c.choices[0].text for c in api.completions.create(
        model=TINY_NAME, prompt="Once upon a time", max_tokens=8, temperature=0, stream=True,
        extra_body={"ignore_eos": True}) if c.choices]
    assert "".join(pieces) == whole.choices[0].text
    assert len(pieces) <= 8


def test_raw_sse_framing_ends_with_done(tiny_runtime: Any) -> None:
    response = post(tiny_runtime, "/v1/completions", {
        "model": TINY_NAME, "prompt": "Raw events", "max_tokens": 6, "temperature": 0, "ignore_eos": True,
        "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    assert all(c["usage"] is None and c["object"] == "text_completion" for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert len({c["id"] for c in chunks}) == 1


LONG_PROMPT = "word " * 600  # > 512 tokens, the fixture's --max-model-len

ERROR_CASES = [
    ("max_tokens zero", {"model": TINY_NAME, "prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ("max_tokens negative", {"model": TINY_NAME, "prompt": "hi", "max_tokens": -3}, "max_tokens"),
    ("prompt too long", {"model": TINY_NAME, "prompt": LONG_PROMPT}, "prompt"),
    ("prompt plus max_tokens too long", {"model": TINY_NAME, "prompt": "hi", "max_tokens": 100000}, "max_tokens"),
    ("max_tokens as string", {"model": TINY_NAME, "prompt": "hi", "max_tokens": "5"}, "max_tokens"),
    ("temperature as word", {"model": TINY_NAME, "prompt": "hi", "temperature": "hot"}, "temperature"),
    ("temperature out of range", {"model": TINY_NAME, "prompt": "hi", "temperature": 3.5}, "temperature"),
    ("prompt missing", {"model": TINY_NAME}, "prompt"),
    ("prompt a number", {"model": TINY_NAME, "prompt": 42}, "prompt"),
    ("token id outside vocabulary", {"model": TINY_NAME, "prompt": [1, 99999999]}, "prompt"),
    ("logit_bias token outside vocabulary", {"model": TINY_NAME, "prompt": "hi", "logit_bias": {"99999999": 5}},
     "logit_bias"),
    ("n zero", {"model": TINY_NAME, "prompt": "hi", "n": 0}, "n"),
    ("n above OpenAI's 128", {"model": TINY_NAME, "prompt": "hi", "n": 129}, "n"),
    ("echo unsupported", {"model": TINY_NAME, "prompt": "hi", "echo": True}, "echo"),
    ("logprobs unsupported", {"model": TINY_NAME, "prompt": "hi", "logprobs": 2}, "logprobs"),
    ("penalty unsupported", {"model": TINY_NAME, "prompt": "hi", "presence_penalty": 0.5}, "presence_penalty"),
]


@pytest.mark.parametrize(("case", "body", "param"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_completion_errors_are_openai_shaped_400s(tiny_runtime: Any, case: str, body: dict,
                                                   param: str) -> None:
    response = post(tiny_runtime, "/v1/completions", body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", "", '"a string"'])
def test_malformed_json_is_a_400(tiny_runtime: Any, raw: str) -> None:
    for path in ("/v1/completions", "/v1/chat/completions"):
        response = post(tiny_runtime, path, raw)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"


def test_chat_errors_through_the_openai_client(tiny_runtime: Any) -> None:
    api = client(tiny_runtime)
    with pytest.raises(openai.NotFoundError) as unknown:  # OpenAI's status for a model it does not have
        api.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert unknown.value.body["code"] == "model_not_found" and "'gpt-4'" in unknown.value.body["message"]
    with pytest.raises(openai.BadRequestError) as too_long:
        api.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": LONG_PROMPT}])
    assert too_long.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as empty:
        api.chat.completions.create(model=TINY_NAME, messages=[])
    assert empty.value.body["param"] == "messages"
    # Nothing was lost: the server still answers.
    assert api.chat.completions.create(model=TINY_NAME, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2).choices


def aborted_count(runtime: Any) -> float:
    """sloserve:request_success_total{finished_reason="abort"}: proof that a request was cut short."""
    series = f'sloserve:request_success_total{{finished_reason="abort",model_name="{TINY_NAME}"}} '
    for line in httpx.get(runtime.url + "/metrics").text.splitlines():
        if line.startswith(series):
            return float(line.split()[-1])
    raise AssertionError("no abort counter in /metrics")


def idle(state: dict) -> bool:
    return state["num_running"] == 0 and state["num_waiting"] == 0 and \
        state["num_free_blocks"] == state["num_total_blocks"]


def test_streaming_client_disconnect_frees_blocks(tiny_runtime: Any) -> None:
    tiny_runtime.wait_engine(idle)
    aborted_before = aborted_count(tiny_runtime)
    body = {"model": TINY_NAME, "prompt": "Keep talking " * 20, "max_tokens": 400, "ignore_eos": True,
            "stream": True}
    with httpx.stream("POST", tiny_runtime.url + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(6)]  # a few tokens in: the request holds blocks now
        assert all(line.startswith("data: ") or not line for line in received)
        busy = tiny_runtime.engine_state()
        assert busy["num_running"] == 1 and busy["num_free_blocks"] < busy["num_total_blocks"]
    tiny_runtime.wait_engine(idle, timeout=10)
    assert aborted_count(tiny_runtime) == aborted_before + 1  # cut short, not run to its 400 tokens


def test_non_streaming_client_disconnect_frees_blocks(tiny_runtime: Any) -> None:
    tiny_runtime.wait_engine(idle)
    aborted_before = aborted_count(tiny_runtime)
    body = json.dumps({"model": TINY_NAME, "prompt": "Keep talking", "max_tokens": 480, "ignore_eos": True})
    request = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    with socket.create_connection(("127.0.0.1", tiny_runtime.port), timeout=10) as sock:
        sock.sendall(request)
        tiny_runtime.wait_engine(lambda s: s["num_running"] == 1 and s["num_free_blocks"] < s["num_total_blocks"])
    tiny_runtime.wait_engine(idle, timeout=10)
    assert aborted_count(tiny_runtime) == aborted_before + 1


def test_streaming_disconnect_with_n_choices_frees_every_choice(tiny_runtime: Any) -> None:
    tiny_runtime.wait_engine(idle)
    aborted_before = aborted_count(tiny_runtime)
    body = {"model": TINY_NAME, "messages": [{"role": "user", "content": "Keep talking"}], "max_tokens": 400,
            "ignore_eos": True, "stream": True, "n": 3}
    with httpx.stream("POST", tiny_runtime.url + "/v1/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        received = [next(lines) for _ in range(12)]  # a few tokens into every choice
        assert all(line.startswith("data: ") or not line for line in received)
        assert tiny_runtime.engine_state()["num_running"] == 3
    tiny_runtime.wait_engine(idle, timeout=10)
    assert aborted_count(tiny_runtime) == aborted_before + 3
