"""Colon metric names escaped to underscores on the way to Prometheus 2.x, and the autoscaler reading both.

prometheus_client (vLLM's and SGLang's /metrics) answers Prometheus 2.x's OpenMetrics Accept header, which
names no `escaping`, with colons escaped: `vllm:time_to_first_token_seconds_bucket` is stored as
`vllm_time_to_first_token_seconds_bucket`. The real Prometheus server shows it here, and PrometheusSource
(whose selectors match both spellings) still sees the figures. Needs the `prometheus` binary.
"""

from __future__ import annotations

import time

import httpx
import pytest
from sloserve_operator.api.spec import ModelService
from sloserve_operator.autoscaler.observe.promql import engine_metrics, series
from sloserve_operator.autoscaler.observe.sources import PrometheusSource, parse_snapshot

from .prometheus_server import PROMETHEUS, PrometheusServer, Target
from .synthetic_exporter import SyntheticRuntime


def test_series_matches_both_spellings_of_a_colon_name():
    assert series("vllm:num_requests_running", 'role="serving"') == \
        '{__name__=~"vllm:num_requests_running|vllm_num_requests_running",role="serving"}'
    assert series("plain_metric", 'a="b"') == 'plain_metric{a="b"}'


def test_direct_scrape_reads_escaped_names():
    text = ("# TYPE vllm:num_requests_running gauge\nvllm_num_requests_running{model_name=\"m\"} 3.0\n"
            "# TYPE vllm:prompt_tokens counter\nvllm_prompt_tokens_total{model_name=\"m\"} 42.0\n")
    snapshot = parse_snapshot(text, engine_metrics("vllm"), time=0.0)
    assert snapshot.gauges["running"] == 3.0
    assert snapshot.counters["prompt_tokens"] == 42.0


@pytest.mark.prometheus
@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not on PATH (apt-get install prometheus)")
def test_prometheus_2_stores_underscores_and_the_source_still_sees_vllm(tmp_path):
    exporter = SyntheticRuntime(prefix="vllm", negotiate=True)
    exporter.serve()
    labels = {"namespace": "prod", "model_service": "chat", "region": "default", "role": "serving", "pod": "a"}
    server = PrometheusServer(tmp_path, [Target(exporter.url, labels)])
    try:
        server.start()
        service = ModelService.model_validate({
            "metadata": {"name": "chat", "namespace": "prod"},
            "spec": {"engine": "vllm", "model": {"name": "smollm2"},
                     "slo": {"ttft": {"p95": "500ms"}, "itl": {"p95": "50ms"}}},
        })
        source = PrometheusSource(server.url, window_seconds=10.0)
        started = time.monotonic()
        deadline = started + 45
        region = None
        while time.monotonic() < deadline:  # keep recording until a full window of requests is seen
            exporter.record(5, ttft=0.08, itl=0.01)
            exporter.set_load(running=2, waiting=0, kv_usage=0.1)
            region = source.observe(service, now=time.time()).regions["default"]
            # A window reaching back before the first scrape extrapolates each series from its own few
            # samples (once a mean prompt of 50 for 100-token requests): wait until it is all recorded.
            full_window = time.monotonic() - started > source.window_seconds + 3
            if full_window and region.ttft_p95 is not None and (region.requests_observed or 0) >= 20 \
                    and region.running is not None:
                break
            time.sleep(0.5)
        names = httpx.get(server.url + "/api/v1/label/__name__/values", timeout=5).json()["data"]
        assert "vllm_time_to_first_token_seconds_bucket" in names  # what Prometheus 2.x really stores
        assert "vllm:time_to_first_token_seconds_bucket" not in names
        assert region is not None and region.ttft_p95 is not None, region
        assert region.request_rate is not None and region.ready_replicas == 1
        assert region.running == 2 and region.mean_prompt_tokens == pytest.approx(100.0)
    finally:
        server.stop()
        exporter.close()
