"""Runtime metrics: names and labels from the conventions, SLO thresholds as exact bucket boundaries, and
the series a real runtime exposes after real requests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sloserve_runtime.server.metrics import TTFT_BUCKETS, RuntimeMetrics, buckets_with

pytestmark = pytest.mark.timeout(120)
MODEL = "tiny"


def samples(body: bytes | str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition as {(name, labels): value}."""
    text = body.decode() if isinstance(body, bytes) else body
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_slo_thresholds_become_exact_bucket_boundaries() -> None:
    edges = buckets_with(TTFT_BUCKETS, 333, None)
    assert 0.333 in edges and edges == sorted(set(edges))
    assert buckets_with([0.5], 500) == [0.5]  # already a boundary: no duplicate
    metrics = RuntimeMetrics("m", slo_ttft_ms=333, slo_itl_ms=47)
    assert 0.333 in metrics.ttft_buckets and 0.047 in metrics.itl_buckets
    found = samples(metrics.render())
    assert ("sloserve:time_to_first_token_seconds_bucket", frozenset({"model_name": "m", "le": "0.333"}.items())) in found
    assert ("sloserve:inter_token_latency_seconds_bucket", frozenset({"model_name": "m", "le": "0.047"}.items())) in found


def test_fraction_within_budget_is_read_exactly_from_the_slo_bucket() -> None:
    metrics = RuntimeMetrics("m", slo_ttft_ms=250, slo_itl_ms=45)
    for index, ttft in enumerate([0.1, 0.2, 0.25, 0.2501, 0.9]):
        metrics.on_first_token(f"r{index}", ttft)
    found = samples(metrics.render())
    within = value(found, "sloserve:time_to_first_token_seconds_bucket", model_name="m", le="0.25")
    total = value(found, "sloserve:time_to_first_token_seconds_count", model_name="m")
    assert (within, total) == (3, 5)  # le is inclusive: 0.25 itself meets a 250 ms budget


def test_observer_callbacks_land_in_the_convention_names() -> None:
    metrics = RuntimeMetrics("m", slo_itl_ms=45)
    metrics.on_scheduled("r", 0.02)
    metrics.on_first_token("r", 0.05)
    metrics.on_token_gap("r", 0.03)
    metrics.on_token_gap("r", 0.12, tokens=3)  # a speculative step: three tokens at 40 ms each
    metrics.on_finished("r", "stop", 0.3, prompt_tokens=11, generation_tokens=5)
    metrics.on_finished("q", "abort", 0.1, prompt_tokens=4, generation_tokens=0)
    metrics.on_prefix_cache(32, 16)
    metrics.on_preemption("r")
    metrics.on_step(running=3, waiting=2, kv_usage=0.25)
    metrics.on_speculation(drafts=2, draft_tokens=8, accepted_tokens=5)
    found = samples(metrics.render())

    def get(name: str, **labels: str) -> float:
        return value(found, name, model_name="m", **labels)

    assert get("sloserve:inter_token_latency_seconds_count") == 4
    assert get("sloserve:inter_token_latency_seconds_bucket", le="0.045") == 4
    assert get("sloserve:inter_token_latency_seconds_bucket", le="0.03") == 1
    assert get("sloserve:request_queue_time_seconds_count") == 1
    assert get("sloserve:e2e_request_latency_seconds_count") == 2
    assert get("sloserve:request_prompt_tokens_sum") == 15
    assert get("sloserve:request_generation_tokens_sum") == 5
    assert get("sloserve:prompt_tokens_total") == 15 and get("sloserve:generation_tokens_total") == 5
    assert get("sloserve:request_success_total", finished_reason="stop") == 1
    assert get("sloserve:request_success_total", finished_reason="abort") == 1
    assert get("sloserve:request_success_total", finished_reason="length") == 0
    assert get("sloserve:prefix_cache_queries_total") == 32 and get("sloserve:prefix_cache_hits_total") == 16
    assert get("sloserve:num_preemptions_total") == 1
    assert (get("sloserve:num_requests_running"), get("sloserve:num_requests_waiting")) == (3, 2)
    assert get("sloserve:kv_cache_usage_perc") == 0.25
    assert get("sloserve:spec_decode_num_drafts_total") == 2
    assert get("sloserve:spec_decode_num_draft_tokens_total") == 8
    assert get("sloserve:spec_decode_num_accepted_tokens_total") == 5


def test_bind_relabels_and_instances_do_not_share_state() -> None:
    first, second = RuntimeMetrics(), RuntimeMetrics("other")
    first.bind("loaded-name")
    first.on_first_token("r", 0.1)
    names = {dict(labels).get("model_name") for _, labels in samples(first.render())}
    assert names == {"loaded-name"}
    assert value(samples(second.render()), "sloserve:time_to_first_token_seconds_count", model_name="other") == 0


def test_runtime_exposes_slo_buckets_and_counts_real_requests(tiny_runtime: Any) -> None:
    def scrape() -> dict:
        response = httpx.get(tiny_runtime.url + "/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        return samples(response.text)

    def get(found: dict, name: str, **labels: str) -> float:
        return value(found, name, model_name=MODEL, **labels)

    before = scrape()
    # Conftest's runtime was started with --slo-ttft-ms 250 --slo-itl-ms 45.
    assert ("sloserve:time_to_first_token_seconds_bucket", frozenset({"model_name": MODEL, "le": "0.25"}.items())) in before
    assert ("sloserve:inter_token_latency_seconds_bucket", frozenset({"model_name": MODEL, "le": "0.045"}.items())) in before
    prompt = "Shared prefix for the cache. " * 6  # several full KV blocks
    for _ in range(2):
        response = httpx.post(tiny_runtime.url + "/v1/completions", json={
            "model": MODEL, "prompt": prompt, "max_tokens": 7, "ignore_eos": True, "temperature": 0})
        usage = response.json()["usage"]
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    assert delta("sloserve:generation_tokens_total") == 14
    assert delta("sloserve:prompt_tokens_total") == 2 * usage["prompt_tokens"]
    assert delta("sloserve:request_success_total", finished_reason="length") == 2
    assert delta("sloserve:time_to_first_token_seconds_count") == 2
    assert delta("sloserve:inter_token_latency_seconds_count") == 12
    assert delta("sloserve:e2e_request_latency_seconds_count") == 2
    assert delta("sloserve:prefix_cache_hits_total") >= 16  # the second request reused the first one's blocks
    assert usage["prompt_tokens_details"]["cached_tokens"] >= 16
    assert get(after, "sloserve:num_requests_running") == 0
    assert get(after, "sloserve:model_weight_bytes") > 0  # the engine reports its resident weight size
