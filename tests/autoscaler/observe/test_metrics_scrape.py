"""ScrapeSource against synthetic replicas: exact figures from histogram deltas; missing data is None."""

from __future__ import annotations

import math
import random
import socket

import pytest
from prometheus_client import generate_latest
from sloserve_operator.api.spec import ModelService
from sloserve_operator.autoscaler.observe.promql import engine_metrics
from sloserve_operator.autoscaler.observe.sources import (
    ScrapeSource,
    fraction_within,
    histogram_quantile,
    length_spread,
    parse_snapshot,
    snapshot_delta,
)
from sloserve_runtime.server.metrics import PROMPT_LENGTH_BUCKETS, TOKEN_COUNT_BUCKETS

from .synthetic_exporter import SyntheticRuntime


def service(ttft: str = "500ms", itl: str = "50ms", regions: list[str] | None = None) -> ModelService:
    spec = {
        "model": {"name": "smollm2"},
        "slo": {"ttft": {"p95": ttft}, "itl": {"p95": itl}},
        "placement": {"regions": [{"name": name} for name in regions or []]},
    }
    return ModelService.model_validate({"metadata": {"name": "chat", "namespace": "prod"}, "spec": spec})


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served_replicas():
    started = [SyntheticRuntime(), SyntheticRuntime()]
    for replica in started:
        replica.serve()
    yield started
    for replica in started:
        replica.close()


@pytest.fixture
def replicas(served_replicas):
    """The module's two replicas with idle gauges; counters carry over (every figure is a delta)."""
    for replica in served_replicas:
        replica.set_load(running=0, waiting=0, kv_usage=0.0)
    return served_replicas


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, math.inf: 100.0}
    # rank 95 lies in (0.5, 1.0]: 0.5 + 0.5 * (95 - 90) / (100 - 90)
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.95, {0.1: 0.0, math.inf: 0.0}) is None
    assert histogram_quantile(0.95, {0.1: 1.0, math.inf: 10.0}) == 0.1  # beyond the top bound
    assert fraction_within(buckets, 0.5) == pytest.approx(0.9)
    assert fraction_within(buckets, 0.4) is None  # not a bucket boundary: unknown, not 0


def cumulative(bounds: tuple[float, ...], lengths: list[float]) -> dict[float, float]:
    buckets = {float(bound): float(sum(1 for length in lengths if length <= bound)) for bound in bounds}
    buckets[math.inf] = float(len(lengths))
    return buckets


def test_length_spread_reads_the_squared_coefficient_of_variation_from_buckets():
    # One bucket (100, 300]: its observations spread evenly, variance 200^2 / 12 around the mean 200.
    assert length_spread({100.0: 0.0, 300.0: 10.0, math.inf: 10.0}) == pytest.approx((200**2 / 12) / 200**2)
    # Two point-like buckets far apart: close to the two-point c^2, 1 for equal halves at 0 and 2m.
    assert length_spread({1.0: 50.0, 1000.0: 50.0, 1001.0: 100.0, math.inf: 100.0}) == pytest.approx(1.0, rel=0.01)
    # Past the last finite bound counts at that bound (never more spread than it shows).
    assert length_spread({10.0: 0.0, math.inf: 5.0}) == 0.0
    assert length_spread({10.0: 0.0, math.inf: 0.0}) is None
    assert length_spread({10.0: 3.0}) is None  # no +Inf bucket: not a histogram


@pytest.mark.parametrize("draw, spread", [
    (lambda rng: rng.expovariate(1 / 400), 1.0),  # exponential: c^2 = 1
    (lambda rng: rng.lognormvariate(6.0, 1.0), math.e - 1),  # log-normal sigma 1: c^2 = e - 1
    (lambda rng: rng.uniform(1000, 3000), (2000**2 / 12) / 2000**2),
])
def test_the_runtime_prompt_buckets_give_the_spread_closely(draw, spread):
    rng = random.Random(7)
    lengths = [max(1, round(draw(rng))) for _ in range(20000)]
    mean = sum(lengths) / len(lengths)
    sample = sum((x - mean) ** 2 for x in lengths) / len(lengths) / mean**2
    assert sample == pytest.approx(spread, rel=0.1)  # the draw is what it says
    # Within a tenth, or 0.03 for near-constant lengths (what matters is (1 + c^2) / 2: within 5%).
    assert length_spread(cumulative(PROMPT_LENGTH_BUCKETS, lengths)) == pytest.approx(sample, rel=0.1, abs=0.03)
    # The 1-2-5 steps of the generation histogram are too coarse for this (why prompts have their own).
    coarse = length_spread(cumulative(TOKEN_COUNT_BUCKETS, lengths))
    assert coarse is not None and coarse > sample


def test_first_scrape_reports_rates_missing_not_zero(replicas):
    source = ScrapeSource({"default": [replica.url for replica in replicas]}, window_seconds=60)
    region = source.observe(service(), now=1000.0).regions["default"]
    assert region.ready_replicas == 2
    assert region.request_rate is None and region.ttft_p95 is None
    assert not region.complete


def test_deltas_give_exact_rates_fractions_and_token_means(replicas):
    source = ScrapeSource({"default": [replica.url for replica in replicas]}, window_seconds=60)
    replicas[0].record(5, ttft=0.07, itl=0.02)  # before the first scrape: must not count
    source.observe(service(), now=1000.0)
    replicas[0].record(15, ttft=0.07, itl=0.02, prompt_tokens=100, output_tokens=20)
    replicas[1].record(5, ttft=0.3, itl=0.02, prompt_tokens=300, output_tokens=40)
    replicas[0].set_load(running=3, waiting=1, kv_usage=0.5)
    replicas[1].set_load(running=2, waiting=0, kv_usage=0.3)
    observation = source.observe(service(), now=1010.0)
    region = observation.regions["default"]
    # 20 finished + 6 more in the backlog over 10 s
    assert region.request_rate == pytest.approx(2.6)
    assert region.requests_observed == 20
    assert region.ttft_within_budget == 1.0
    assert region.ttft_p95 is not None and 0.25 < region.ttft_p95 <= 0.5
    assert region.itl_within_budget == 1.0
    assert region.mean_prompt_tokens == pytest.approx((15 * 100 + 5 * 300) / 20)
    assert region.mean_output_tokens == pytest.approx((15 * 20 + 5 * 40) / 20)
    assert region.prompt_tokens_spread == pytest.approx(
        length_spread(cumulative(PROMPT_LENGTH_BUCKETS, [100] * 15 + [300] * 5)))
    # The p95 prompt falls among the five 300-token ones, in their bucket (256, 362].
    assert 256 < region.prompt_tokens_p95 <= 362
    assert (region.running, region.waiting) == (5, 1)
    assert region.kv_usage == pytest.approx(0.4)
    assert region.complete and observation.available and not observation.problems

    replicas[1].record(10, ttft=2.0, itl=0.2)  # a breach: 10 of 30 requests over the TTFT budget
    replicas[0].set_load(running=0, waiting=0, kv_usage=0.0)
    replicas[1].set_load(running=0, waiting=0, kv_usage=0.0)
    region = source.observe(service(), now=1020.0).regions["default"]
    assert region.ttft_within_budget == pytest.approx(20 / 30)
    assert region.ttft_p95 is not None and region.ttft_p95 > 0.5
    assert region.itl_p95 is not None and region.itl_p95 > 0.05


def test_unreachable_replica_is_partial_and_all_down_is_missing(replicas):
    dead = closed_port_url()
    source = ScrapeSource({"default": [replicas[0].url, dead]}, window_seconds=60)
    source.observe(service(), now=1000.0)
    observation = source.observe(service(), now=1005.0)
    region = observation.regions["default"]
    assert region.ready_replicas == 1 and region.request_rate == 0.0
    assert any(dead in problem for problem in observation.problems)
    assert any("partial" in problem for problem in observation.problems)

    source.targets = {"default": [dead]}
    observation = source.observe(service(), now=1010.0)
    region = observation.regions["default"]
    assert region.ready_replicas == 0
    assert region.request_rate is None and region.ttft_p95 is None and region.running is None
    assert not observation.available


def test_regions_are_separate_and_unlisted_region_is_missing(replicas):
    spec = service(regions=["us-east-1", "eu-west-1", "ap-south-1"])
    source = ScrapeSource({"us-east-1": [replicas[0].url], "eu-west-1": [replicas[1].url]}, window_seconds=60)
    source.observe(spec, now=1000.0)
    replicas[0].record(30, ttft=0.07, itl=0.02)
    replicas[1].record(10, ttft=0.07, itl=0.02)
    observation = source.observe(spec, now=1010.0)
    assert observation.regions["us-east-1"].request_rate == pytest.approx(3.0)
    assert observation.regions["eu-west-1"].request_rate == pytest.approx(1.0)
    assert observation.regions["ap-south-1"].request_rate is None
    assert observation.regions["ap-south-1"].ready_replicas is None
    assert any("ap-south-1" in problem for problem in observation.problems)


def test_budget_off_the_bucket_grid_reads_the_bucket_below(replicas):
    source = ScrapeSource({"default": [replicas[0].url]}, window_seconds=60)
    spec = service(ttft="400ms")
    source.observe(spec, now=1000.0)
    replicas[0].record(6, ttft=0.07, itl=0.02)
    replicas[0].record(4, ttft=0.3, itl=0.02)  # within 400ms but above the 250ms bucket below it
    observation = source.observe(spec, now=1010.0)
    assert observation.regions["default"].ttft_within_budget == pytest.approx(0.6)  # never flattering
    assert observation.regions["default"].itl_within_budget == 1.0
    assert any("not a bucket boundary" in problem for problem in observation.problems)


def test_restart_counts_from_zero_and_no_targets_is_missing():
    metrics = engine_metrics("bundled")
    replica = SyntheticRuntime()
    replica.record(10, ttft=0.07, itl=0.02)
    before = parse_snapshot(generate_latest(replica.registry).decode(), metrics, time=0.0)
    assert before.counts["e2e"] == 10 and before.counters["prompt_tokens"] == 1000
    restarted = SyntheticRuntime()
    restarted.record(4, ttft=0.07, itl=0.02)
    source = ScrapeSource({}, window_seconds=60)
    delta = snapshot_delta(before, parse_snapshot(generate_latest(restarted.registry).decode(), metrics, time=10.0))
    assert delta.counts["e2e"] == 4 and delta.counters["prompt_tokens"] == 400
    assert source.observe(service(), now=0.0).regions["default"].ready_replicas is None


def test_window_uses_the_snapshot_at_its_start(replicas):
    source = ScrapeSource({"default": [replicas[0].url]}, window_seconds=20)
    for step in range(5):  # 10 requests every 10 s
        replicas[0].record(10, ttft=0.07, itl=0.02)
        region = source.observe(service(), now=1000.0 + 10 * step).regions["default"]
    # baseline is the scrape 20 s back (t=1020): 20 requests in 20 s
    assert region.requests_observed == 20
    assert region.request_rate == pytest.approx(1.0)


def test_refusals_are_demand_and_misses_and_the_hit_rate_is_read(replicas):
    source = ScrapeSource({"default": [replica.url for replica in replicas]}, window_seconds=60)
    source.observe(service(), now=2000.0)
    replicas[0].record(30, ttft=0.07, itl=0.02)  # all within budget
    replicas[1].refuse(10)  # admission said 429 to these
    replicas[1].refuse(2, reason="queue_full")
    replicas[0].prefix_lookups(queried=1000, hit=250)
    replicas[1].prefix_lookups(queried=1000, hit=550)
    region = source.observe(service(), now=2010.0).regions["default"]
    assert region.request_rate == pytest.approx((30 + 12) / 10)  # asked for, not only served
    assert region.refused_rate == pytest.approx(12 / 10)
    assert region.ttft_within_budget == pytest.approx(30 / 42)  # a refused request missed its budget
    assert region.itl_within_budget == 1.0  # a refused request has no token gaps
    assert region.requests_observed == 30
    assert region.prefix_cache_hit_rate == pytest.approx(800 / 2000)
    source.observe(service(), now=2020.0)
    idle = source.observe(service(), now=2100.0).regions["default"]  # a window later: nothing new
    assert idle.refused_rate == 0.0 and idle.prefix_cache_hit_rate is None  # no lookups: unknown, not 0
