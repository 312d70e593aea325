"""PrometheusSource against the real Prometheus server scraping synthetic runtime exporters.

Checks the PromQL end to end: warm pods excluded, missing data None (not 0), the exact within-budget
fraction, and that PrometheusSource + policy.decide ask for a scale-up within two decision intervals of a
budget breach. Needs the `prometheus` binary (Debian package `prometheus`; `make system-deps`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import pytest
from sloserve_operator.api.spec import ModelService
from sloserve_operator.autoscaler.decide.policy import PolicyState, decide
from sloserve_operator.autoscaler.observe.observation import Observation
from sloserve_operator.autoscaler.observe.sources import (
    PrometheusSource,
    ScrapeSource,
    histogram_quantile,
    length_spread,
)

from .prometheus_server import PROMETHEUS, PrometheusServer, Target
from .synthetic_exporter import SyntheticRuntime

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus binary not on PATH (apt-get install prometheus)"),
]

WINDOW = 10.0  # seconds: ten 1 s scrapes per rate()
INTERVAL = 3.0  # seconds between autoscaler decisions in the breach test


def service(name: str, max_replicas: int = 8) -> ModelService:
    return ModelService.model_validate({
        "metadata": {"name": name, "namespace": "prod"},
        "spec": {
            "model": {"name": "smollm2"},
            "slo": {"ttft": {"p95": "500ms"}, "itl": {"p95": "50ms"}},
            "scaling": {"minReplicas": 1, "maxReplicas": max_replicas, "scaleDown": {"stabilizationWindow": "5m"}},
        },
    })


def labels(model_service: str, role: str, pod: str) -> dict[str, str]:
    return {"namespace": "prod", "model_service": model_service, "region": "default", "role": role, "pod": pod}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """chat: two serving replicas and a warm one; exact: one serving replica; ghost: nothing scraped."""
    exporters = {name: SyntheticRuntime() for name in ("chat-a", "chat-b", "chat-warm", "exact-a", "refusing-a")}
    for exporter in exporters.values():
        exporter.serve()
    targets = [
        Target(exporters["chat-a"].url, labels("chat", "serving", "chat-a")),
        Target(exporters["chat-b"].url, labels("chat", "serving", "chat-b")),
        Target(exporters["chat-warm"].url, labels("chat", "warm", "chat-warm")),
        Target(exporters["exact-a"].url, labels("exact", "serving", "exact-a")),
        Target(exporters["refusing-a"].url, labels("refusing", "serving", "refusing-a")),
    ]
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets)
    try:
        server.start()
        yield server, exporters
    finally:
        server.stop()
        for exporter in exporters.values():
            exporter.close()


def poll(observe: Callable[[], Observation], until: Callable[[Observation], bool], seconds: float) -> Observation:
    """Observe every 0.25 s until the condition holds; fail with the last observation at the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        observation = observe()
        if until(observation):
            return observation
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {seconds}s; last observation: {observation}")
        time.sleep(0.25)


def test_unscraped_service_is_missing_never_zero(fleet):
    server, _ = fleet
    source = PrometheusSource(server.url, window_seconds=WINDOW)
    observation = source.observe(service("ghost"), now=time.time())
    region = observation.regions["default"]
    assert region.ready_replicas is None and region.request_rate is None
    assert region.ttft_p95 is None and region.running is None and region.kv_usage is None
    assert not observation.available
    assert any("no scrape targets for prod/ghost" in problem for problem in observation.problems)
    decision = decide(service("ghost").spec, observation, PolicyState(), time.time(), current_serving={"default": 3})
    assert decision.serving == {"default": 3} and not decision.metrics_available


def test_unreachable_prometheus_is_missing():
    source = PrometheusSource("http://127.0.0.1:9", window_seconds=WINDOW, timeout_seconds=1.0)
    observation = source.observe(service("chat"), now=time.time())
    assert observation.regions["default"].request_rate is None
    assert any("did not answer" in problem for problem in observation.problems)


def test_exact_fraction_within_budget_and_token_means(fleet):
    server, exporters = fleet
    source = PrometheusSource(server.url, window_seconds=60.0)
    spec = service("exact")
    # Idle first: the rate of zero requests is a measured 0, and the percentiles are unknown (None).
    idle = poll(lambda: source.observe(spec, now=time.time()),
                lambda o: o.regions["default"].request_rate is not None, seconds=45)
    assert idle.regions["default"].request_rate == 0.0 and idle.regions["default"].ttft_p95 is None
    assert idle.regions["default"].ready_replicas == 1
    direct = ScrapeSource({"default": [exporters["exact-a"].url]}, window_seconds=60.0)
    direct.observe(spec, now=time.time())

    exporters["exact-a"].record(30, ttft=0.07, itl=0.02, prompt_tokens=100, output_tokens=20)
    exporters["exact-a"].record(10, ttft=2.0, itl=0.02, prompt_tokens=700, output_tokens=20)
    region = poll(lambda: source.observe(spec, now=time.time()),
                  lambda o: (o.regions["default"].requests_observed or 0) >= 40, seconds=45).regions["default"]
    assert region.ttft_within_budget == pytest.approx(0.75, abs=1e-9)  # exactly the bucket at 0.5 s
    assert region.itl_within_budget == pytest.approx(1.0)
    assert region.mean_prompt_tokens == pytest.approx((30 * 100 + 10 * 700) / 40)
    # The spread from the prompt-length buckets, read bucket by bucket through PromQL:
    # 100 in (91, 128], 700 in (512, 724].
    expected = {91.0: 0.0, 128.0: 30.0, 512.0: 30.0, 724.0: 40.0, math.inf: 40.0}
    assert region.prompt_tokens_spread == pytest.approx(length_spread(expected), rel=1e-6)
    # ... and the p95 as Prometheus interpolates it: inside the (512, 724] bucket the long prompts are in.
    assert region.prompt_tokens_p95 == pytest.approx(histogram_quantile(0.95, expected), rel=1e-6)
    assert 512.0 < region.prompt_tokens_p95 <= 724.0
    assert region.mean_output_tokens == pytest.approx(20.0)
    assert region.ttft_p95 is not None and region.ttft_p95 > 0.5
    # The direct scrape computes the same figures from its own deltas.
    scraped = direct.observe(spec, now=time.time()).regions["default"]
    assert scraped.requests_observed == 40
    assert scraped.ttft_within_budget == pytest.approx(region.ttft_within_budget, abs=1e-9)
    assert scraped.ttft_p95 == pytest.approx(region.ttft_p95)
    assert scraped.mean_prompt_tokens == pytest.approx(region.mean_prompt_tokens)
    assert scraped.prompt_tokens_spread == pytest.approx(region.prompt_tokens_spread, rel=1e-6)
    assert scraped.prompt_tokens_p95 == pytest.approx(region.prompt_tokens_p95, rel=1e-6)


def test_refusals_count_as_demand_and_misses_and_the_hit_rate_is_read(fleet):
    server, exporters = fleet
    source = PrometheusSource(server.url, window_seconds=60.0)
    spec = service("refusing")
    poll(lambda: source.observe(spec, now=time.time()),
         lambda o: o.regions["default"].request_rate is not None, seconds=45)
    exporter = exporters["refusing-a"]
    exporter.record(30, ttft=0.07, itl=0.02)
    exporter.refuse(10)
    exporter.prefix_lookups(queried=2000, hit=500)
    region = poll(lambda: source.observe(spec, now=time.time()),
                  lambda o: (o.regions["default"].requests_observed or 0) >= 30
                  and (o.regions["default"].refused_rate or 0) * 60 >= 10, seconds=45).regions["default"]
    # increase() extrapolates over the window's edges: compare shares, which it scales alike.
    assert region.ttft_within_budget == pytest.approx(30 / 40, rel=0.05)
    assert region.request_rate == pytest.approx(region.refused_rate * 4, rel=0.05)  # 40 asked, 10 refused
    assert region.prefix_cache_hit_rate == pytest.approx(0.25, abs=1e-9)


def test_breach_scales_up_within_two_intervals(fleet):
    server, exporters = fleet
    spec = service("chat")
    source = PrometheusSource(server.url, window_seconds=WINDOW)
    breach = threading.Event()
    stop = threading.Event()

    def traffic() -> None:
        for _ in range(2000):  # bounded: 0.1 s per iteration, far beyond the test's length
            if stop.wait(0.1):
                return
            ttft = 1.5 if breach.is_set() else 0.08
            for name in ("chat-a", "chat-b"):
                exporters[name].record(1, ttft=ttft, itl=0.005)
                exporters[name].set_load(running=2, waiting=0, kv_usage=0.2)
            exporters["chat-warm"].record(1, ttft=5.0, itl=0.5)  # warm pods serve nothing we count

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        poll(lambda: source.observe(spec, now=time.time()),
             lambda o: o.available and (o.regions["default"].requests_observed or 0) >= 20, seconds=45)
        state, serving = PolicyState(), {"default": 2}
        for healthy_tick in range(2):
            if healthy_tick:
                time.sleep(INTERVAL)
            now = time.time()
            observation = source.observe(spec, now=now)
            decision = decide(spec.spec, observation, state, now, current_serving=serving)
            assert observation.regions["default"].ready_replicas == 2  # the warm pod is not counted
            assert decision.serving == {"default": 2}, decision.reason
            state = decision.state

        breach.set()
        breach_time = time.monotonic()
        decisions = []
        for tick in (1, 2):
            time.sleep(max(breach_time + tick * INTERVAL - time.monotonic(), 0.0))
            now = time.time()
            observation = source.observe(spec, now=now)
            decision = decide(spec.spec, observation, state, now, current_serving=serving)
            decisions.append(decision)
            state = decision.state
            if decision.serving["default"] > 2:
                break
        assert decisions[-1].serving["default"] > 2, [d.reason for d in decisions]
        assert decisions[-1].metrics_available
    finally:
        stop.set()
        worker.join(timeout=5)
