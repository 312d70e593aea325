"""Metrics sources: what the runtime replicas report, turned into an Observation for the policy.

Two sources compute the same figures the same way:
- PrometheusSource asks a Prometheus server (in-cluster, or local mode's embedded one) with the PromQL of
  promql.py, aggregated by region over the serving pods of one ModelService.
- ScrapeSource reads the replicas' /metrics itself (local mode without Prometheus, tests) and takes
  histogram and counter deltas between its own scrapes.

A figure that cannot be measured (no targets, target down, first scrape, Prometheus unreachable, budget not
a bucket boundary) is None and the reason is added to Observation.problems. It is never reported as 0:
the policy must hold on missing data, not scale down.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sloserve_operator.api.spec import ModelService
from sloserve_operator.autoscaler.decide.capacity import PROMPT_TAIL_QUANTILE
from sloserve_operator.autoscaler.decide.placement import region_names
from sloserve_operator.autoscaler.observe.observation import Observation, RegionObservation, with_refusals
from sloserve_operator.autoscaler.observe.promql import (
    OPTIONAL_HISTOGRAMS,
    OPTIONAL_METRICS,
    ServiceQueries,
    budget_bound,
    engine_metrics,
    exposed_name,
)


class MetricsSource(Protocol):
    def observe(self, service: ModelService, now: float) -> Observation:
        """Figures for `service` over the source's window ending at `now` (unix seconds)."""
        ...


# ---------------------------------------------------------------- histogram arithmetic


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Quantile of a cumulative histogram {upper bound: count}, interpolated inside the bucket as
    Prometheus' histogram_quantile does; None when the histogram holds no observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the highest finite bound: report that bound, as Prometheus does
            if bound <= 0 or count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def fraction_within(buckets: Mapping[float, float], bound: float, conservative: bool = False) -> float | None:
    """Exact fraction of observations <= bound, read from the bucket at `bound`.

    With no bucket at `bound`: None, or with `conservative` the bucket just below it (an engine whose
    buckets are fixed, like vLLM's, can then be judged without ever flattering it). None too with no
    observation at all.
    """
    total = buckets.get(math.inf)
    if not total or total <= 0:
        return None
    for upper, count in buckets.items():
        if math.isclose(upper, bound, rel_tol=1e-9, abs_tol=1e-12):
            return min(max(count / total, 0.0), 1.0)
    if not conservative:
        return None
    below = [upper for upper in buckets if upper < bound]
    return min(max(buckets[max(below)] / total, 0.0), 1.0) if below else 0.0


def length_spread(buckets: Mapping[float, float]) -> float | None:
    """Squared coefficient of variation (variance / mean^2) of a length histogram {upper bound: cumulative
    count}, each bucket's observations spread evenly over it (those past the last finite bound put at that
    bound, an underestimate; the runtime's last one is 131,072 tokens); None with no observation.

    The capacity model's attention term grows with E[L^2] / E[L], which a mean alone cannot give
    (Mooncake's prompts have c^2 = 1.7, Azure's 0.9). The runtime's half-octave prompt buckets give it
    within about a tenth on those traces; vLLM's 1-2-5 steps overstate it by up to a third."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]) or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    lower, below, first, second = 0.0, 0.0, 0.0, 0.0
    for bound in bounds:
        count = max(buckets[bound] - below, 0.0)
        if math.isinf(bound):
            first, second = first + count * lower, second + count * lower * lower
        else:
            first += count * (lower + bound) / 2.0
            second += count * (lower * lower + lower * bound + bound * bound) / 3.0
            lower = bound
        below = max(buckets[bound], below)
    mean = first / total
    if mean <= 0:
        return None
    return max(second / total / (mean * mean) - 1.0, 0.0)


def _budgets(service: ModelService) -> tuple[float, float]:
    slo = service.spec.slo
    return slo.ttft.p95_seconds, slo.itl.p95_seconds


# ---------------------------------------------------------------- per-region assembly (both sources)


@dataclass
class RegionFigures:
    """Raw per-region figures as a source measured them, before the shared checks."""

    ready_replicas: int | None = None
    request_rate: float | None = None
    finished: float | None = None
    prompt_tokens: float | None = None  # tokens counted in the window
    generation_tokens: float | None = None
    ttft_p95: float | None = None
    itl_p95: float | None = None
    ttft_within_budget: float | None = None
    itl_within_budget: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_usage: float | None = None
    refused: float | None = None  # requests refused by admission in the window (429)
    refused_rate: float | None = None  # per second; already included in request_rate
    prefix_cache_queries: float | None = None  # prompt tokens looked up in the window
    prefix_cache_hits: float | None = None
    prompt_length_buckets: dict[float, float] | None = None  # cumulative, over the window
    stale: bool = False
    problems: list[str] = field(default_factory=list)


def _per_request(tokens: float | None, finished: float | None) -> float | None:
    if tokens is None or not finished or finished <= 0:
        return None
    return tokens / finished


def _hit_rate(queries: float | None, hits: float | None) -> float | None:
    if queries is None or hits is None or queries <= 0:
        return None
    return min(max(hits / queries, 0.0), 1.0)


def assemble_region(region: str, window_seconds: float, figures: RegionFigures,
                    budgets: tuple[float, float]) -> tuple[RegionObservation, list[str]]:
    """One RegionObservation plus the problems that explain its missing figures. Refused requests are
    demand (the sources add them to request_rate) and misses (here, in ttft_within_budget): the policy
    then sizes for what was asked, not for what admission let through."""
    problems = [f"region {region}: {text}" for text in figures.problems]
    if figures.ready_replicas is None:
        problems.append(f"region {region}: no serving replica reports metrics")
    if figures.stale:
        problems.append(f"region {region}: newest sample older than the {window_seconds:g}s window")
    if figures.finished and figures.finished > 0:
        for name, within, budget in (("ttft", figures.ttft_within_budget, budgets[0]),
                                     ("itl", figures.itl_within_budget, budgets[1])):
            if within is None:
                problems.append(
                    f"region {region}: {name} fraction within budget unknown (no {name} samples in the window, "
                    f"or no histogram bucket at the budget {budget:g}s)"
                )
    observation = RegionObservation(
        region=region,
        window_seconds=window_seconds,
        ready_replicas=figures.ready_replicas,
        request_rate=None if figures.request_rate is None else max(figures.request_rate, 0.0),
        ttft_p95=figures.ttft_p95,
        itl_p95=figures.itl_p95,
        refused_rate=None if figures.refused_rate is None else max(figures.refused_rate, 0.0),
        ttft_within_budget=with_refusals(figures.ttft_within_budget, figures.finished, figures.refused),
        itl_within_budget=figures.itl_within_budget,
        prefix_cache_hit_rate=_hit_rate(figures.prefix_cache_queries, figures.prefix_cache_hits),
        mean_prompt_tokens=_per_request(figures.prompt_tokens, figures.finished),
        mean_output_tokens=_per_request(figures.generation_tokens, figures.finished),
        prompt_tokens_spread=None if figures.prompt_length_buckets is None
        else length_spread(figures.prompt_length_buckets),
        prompt_tokens_p95=None if figures.prompt_length_buckets is None
        else histogram_quantile(PROMPT_TAIL_QUANTILE, figures.prompt_length_buckets),
        running=figures.running,
        waiting=figures.waiting,
        kv_usage=figures.kv_usage,
        requests_observed=figures.finished,
        stale=figures.stale,
    )
    return observation, problems


def _observation(now: float, window: float, figures: Mapping[str, RegionFigures],
                 budgets: tuple[float, float], problems: list[str]) -> Observation:
    regions: dict[str, RegionObservation] = {}
    for region, region_figures in figures.items():
        regions[region], region_problems = assemble_region(region, window, region_figures, budgets)
        problems.extend(region_problems)
    return Observation(time=now, regions=regions, problems=tuple(problems))


# ---------------------------------------------------------------- Prometheus


class PrometheusSource:
    """Figures from a Prometheus server that scrapes the replicas with the conventional target labels.

    `engine` overrides the metric names of the ModelService's own spec.engine (e.g. for a dashboard
    reading several engines). The window should cover at least four scrape intervals so rate() has data.
    """

    def __init__(self, url: str, window_seconds: float = 60.0, engine: str | None = None,
                 timeout_seconds: float = 5.0) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        self.url = url
        self.window_seconds = float(window_seconds)
        self.engine = engine
        self.timeout_seconds = timeout_seconds
        # One quick retry at most: a dead Prometheus must not stall the autoscaler's timer.
        self._client = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=1, backoff_factor=0))

    def queries(self, service: ModelService) -> ServiceQueries:
        ttft_budget, itl_budget = _budgets(service)
        engine = self.engine or service.spec.engine
        return ServiceQueries(
            namespace=service.metadata.namespace,
            model_service=service.metadata.name,
            metrics=engine_metrics(engine),
            window_seconds=self.window_seconds,
            ttft_budget=budget_bound(engine, "ttft", ttft_budget),
            itl_budget=budget_bound(engine, "itl", itl_budget),
        )

    def _instant(self, query: str, now: float) -> list[dict]:
        # Prometheus 2.x refuses "5.0s" as a duration: send whole milliseconds.
        params = {"time": now, "timeout": f"{int(self.timeout_seconds * 1000)}ms"}
        return self._client.custom_query(query=query, params=params, timeout=self.timeout_seconds)

    def _vector(self, query: str, now: float) -> dict[str, float | None]:
        """region -> value of an instant query at `now`; NaN (e.g. a quantile of no requests) is None."""
        values: dict[str, float | None] = {}
        for item in self._instant(query, now):
            region = item.get("metric", {}).get("region", "")
            value = float(item["value"][1])
            values[region] = None if math.isnan(value) or math.isinf(value) else value
        return values

    def _buckets(self, query: str, now: float) -> dict[str, dict[float, float]]:
        """region -> {le: count} of a by-(region, le) bucket query at `now` (NaN counts dropped)."""
        per_region: dict[str, dict[float, float]] = {}
        for item in self._instant(query, now):
            labels = item.get("metric", {})
            value = float(item["value"][1])
            if "le" in labels and not math.isnan(value):
                per_region.setdefault(labels.get("region", ""), {})[float(labels["le"])] = value
        return per_region

    def observe(self, service: ModelService, now: float) -> Observation:
        import requests
        from prometheus_api_client import PrometheusApiClientException

        window = self.window_seconds
        expected = region_names(service.spec)
        budgets = _budgets(service)
        results: dict[str, dict[str, float | None]] = {}
        histograms: dict[str, dict[str, dict[float, float]]] = {}
        try:
            queries = self.queries(service)
            for name, query in queries.all().items():
                results[name] = self._vector(query, now)
            for name, query in queries.histograms().items():
                histograms[name] = self._buckets(query, now)
        except (PrometheusApiClientException, requests.RequestException, ValueError, KeyError) as error:
            problem = f"prometheus at {self.url} did not answer: {type(error).__name__}: {error}"
            empty = {region: RegionFigures(problems=["no data (prometheus unavailable)"]) for region in expected}
            return _observation(now, window, empty, budgets, [problem])
        figures = {region: self._figures(region, results, now) for region in expected}
        for region, region_figures in figures.items():
            prompt_lengths = histograms.get("prompt_length", {}).get(region)
            region_figures.prompt_length_buckets = prompt_lengths if prompt_lengths else None
        problems = []
        if not results["newest_scrape"]:
            problems.append(
                f"prometheus has no scrape targets for {service.metadata.namespace}/{service.metadata.name}"
            )
        return _observation(now, window, figures, budgets, problems)

    def _figures(self, region: str, results: dict[str, dict[str, float | None]], now: float) -> RegionFigures:
        def get(name: str) -> float | None:
            return results[name].get(region)

        newest = get("newest_scrape")
        ready = get("ready_replicas")
        finished = get("finished")
        changes = (get("running_change"), get("waiting_change"))
        growth = None if None in changes else sum(changes)
        figures = RegionFigures(
            ready_replicas=None if ready is None else int(round(ready)),
            finished=finished,
            prompt_tokens=get("prompt_tokens"),
            generation_tokens=get("generation_tokens"),
            ttft_p95=get("ttft_p95"),
            itl_p95=get("itl_p95"),
            ttft_within_budget=get("ttft_within_budget"),
            itl_within_budget=get("itl_within_budget"),
            running=get("running"),
            waiting=get("waiting"),
            kv_usage=get("kv_usage"),
            refused=results.get("refused", {}).get(region),
            prefix_cache_queries=results.get("prefix_cache_queries", {}).get(region),
            prefix_cache_hits=results.get("prefix_cache_hits", {}).get(region),
            stale=newest is not None and now - newest > self.window_seconds,
        )
        if figures.refused is not None:
            figures.refused_rate = figures.refused / self.window_seconds
        if finished is not None:
            figures.request_rate = (finished + (growth or 0.0) + (figures.refused or 0.0)) / self.window_seconds
            if growth is None:
                figures.problems.append("running/waiting gauges missing: arrival rate counts finished only")
        elif ready:
            figures.problems.append("no request counter in the window: arrival rate unknown")
        if figures.stale:
            figures.request_rate = None
        return figures


# ---------------------------------------------------------------- direct scrape


_HISTOGRAMS = ("ttft", "itl", "e2e")
_COUNTERS = ("prompt_tokens", "generation_tokens")
_GAUGES = ("running", "waiting", "kv_usage")


@dataclass
class Snapshot:
    """One scrape of one replica, reduced to the figures the autoscaler needs (summed over label sets)."""

    time: float
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # histogram -> le -> cumulative
    counts: dict[str, float] = field(default_factory=dict)  # histogram -> observation count
    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)  # running/waiting summed, kv_usage averaged


def _flat(name: str) -> str:
    return name.replace(":", "_")


def parse_snapshot(text: str, metrics: Mapping[str, str], time: float) -> Snapshot:
    """Reduce a /metrics text exposition to a Snapshot; ValueError if the text does not parse.

    Names are compared with colons read as underscores: an exporter may escape `vllm:` to `vllm_` (see
    promql's module docstring), and no engine exposes both spellings for different things."""
    histograms = (*_HISTOGRAMS, *(name for name in OPTIONAL_HISTOGRAMS if name in metrics))
    wanted_buckets = {_flat(f"{metrics[name]}_bucket"): name for name in histograms}
    wanted_counts = {_flat(f"{metrics[name]}_count"): name for name in _HISTOGRAMS}
    wanted_counters = {_flat(exposed_name(name, metrics[name])): name
                       for name in (*_COUNTERS, *OPTIONAL_METRICS) if name in metrics}
    wanted_gauges = {_flat(metrics[name]): name for name in _GAUGES}
    snapshot = Snapshot(time=time)
    gauge_series: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, value = _flat(sample.name), float(sample.value)
            if name in wanted_buckets:
                per_le = snapshot.buckets.setdefault(wanted_buckets[name], {})
                bound = float(sample.labels["le"])
                per_le[bound] = per_le.get(bound, 0.0) + value
            elif name in wanted_counts:
                key = wanted_counts[name]
                snapshot.counts[key] = snapshot.counts.get(key, 0.0) + value
            elif name in wanted_counters:
                key = wanted_counters[name]
                snapshot.counters[key] = snapshot.counters.get(key, 0.0) + value
            elif name in wanted_gauges:
                gauge_series.setdefault(wanted_gauges[name], []).append(value)
    for name, values in gauge_series.items():
        snapshot.gauges[name] = sum(values) / len(values) if name == "kv_usage" else sum(values)
    return snapshot


@dataclass
class SnapshotDelta:
    span: float
    buckets: dict[str, dict[float, float]]
    counts: dict[str, float]
    counters: dict[str, float]
    backlog_growth: float | None


def snapshot_delta(old: Snapshot, new: Snapshot) -> SnapshotDelta:
    """Increase from `old` to `new`; a counter that went down means the replica restarted (count from 0)."""
    restarted = any(new.counts.get(name, 0.0) < old.counts.get(name, 0.0) for name in _HISTOGRAMS)
    base = Snapshot(time=old.time) if restarted else old
    buckets = {
        name: {le: count - base.buckets.get(name, {}).get(le, 0.0) for le, count in per_le.items()}
        for name, per_le in new.buckets.items()
    }
    counts = {name: value - base.counts.get(name, 0.0) for name, value in new.counts.items()}
    counters = {}
    for name, value in new.counters.items():
        previous = base.counters.get(name, 0.0)
        counters[name] = value - previous if value >= previous else value
    backlog = ("running", "waiting")
    growth = None
    if all(name in new.gauges and name in old.gauges for name in backlog):
        growth = sum(new.gauges[name] - old.gauges[name] for name in backlog)
    return SnapshotDelta(new.time - old.time, buckets, counts, counters, growth)


def _add(into: dict[float, float], more: Mapping[float, float]) -> None:
    for le, count in more.items():
        into[le] = into.get(le, 0.0) + count


class ScrapeSource:
    """Figures from the replicas' own /metrics, with deltas between this source's successive scrapes.

    `targets` maps region -> base URLs of the serving replicas; local mode may replace it (or pass a
    callable returning it) as it scales. Rates need two scrapes: the first observe() reports them missing.
    """

    def __init__(self, targets: Mapping[str, list[str]] | Callable[[], Mapping[str, list[str]]],
                 window_seconds: float = 60.0, engine: str | None = None, timeout_seconds: float = 2.0) -> None:
        self.targets = targets
        self.window_seconds = float(window_seconds)
        self.engine = engine
        self.timeout_seconds = timeout_seconds
        self._history: dict[str, deque[Snapshot]] = {}
        self._last_success: dict[str, float] = {}

    def _current_targets(self) -> Mapping[str, list[str]]:
        return self.targets() if callable(self.targets) else self.targets

    def _scrape(self, client: httpx.Client, url: str, metrics: Mapping[str, str], now: float) -> Snapshot | str:
        try:
            response = client.get(url.rstrip("/") + "/metrics")
            response.raise_for_status()
            return parse_snapshot(response.text, metrics, now)
        except (httpx.HTTPError, ValueError, KeyError) as error:
            return f"{url} scrape failed: {type(error).__name__}: {error}"

    def _baseline(self, url: str, now: float) -> Snapshot | None:
        """The newest snapshot at or before the window's start (else the oldest); older ones dropped."""
        history = self._history[url]
        while len(history) > 2 and history[1].time <= now - self.window_seconds:
            history.popleft()
        return history[0] if len(history) > 1 else None

    def observe(self, service: ModelService, now: float) -> Observation:
        metrics = engine_metrics(self.engine or service.spec.engine)
        budgets = _budgets(service)
        targets = {region: list(urls) for region, urls in self._current_targets().items()}
        expected = region_names(service.spec)
        problems = [f"targets given for region {region}, which the spec does not name"
                    for region in targets if region not in expected]
        all_urls = [url for region in expected for url in targets.get(region, [])]
        for url in list(self._history):
            if url not in all_urls:  # a replica that left: forget it
                self._history.pop(url)
                self._last_success.pop(url, None)
        with httpx.Client(timeout=self.timeout_seconds) as client, \
                ThreadPoolExecutor(max_workers=max(min(len(all_urls), 8), 1)) as pool:
            scraped = dict(zip(all_urls, pool.map(lambda url: self._scrape(client, url, metrics, now), all_urls),
                               strict=True))
        figures = {}
        for region in expected:
            figures[region] = self._region_figures(targets.get(region, []), scraped, now, budgets)
        return _observation(now, self.window_seconds, figures, budgets, problems)

    def _region_figures(self, urls: list[str], scraped: Mapping[str, Snapshot | str], now: float,
                        budgets: tuple[float, float]) -> RegionFigures:
        figures = RegionFigures()
        if not urls:
            figures.problems.append("no serving replicas listed")
            return figures
        buckets: dict[str, dict[float, float]] = {"ttft": {}, "itl": {}}
        fresh: list[Snapshot] = []
        deltas: list[SnapshotDelta] = []
        for url in urls:
            result = scraped[url]
            if isinstance(result, str):
                figures.problems.append(result)
                continue
            self._history.setdefault(url, deque()).append(result)
            self._last_success[url] = now
            fresh.append(result)
            baseline = self._baseline(url, now)
            if baseline is not None and result.time > baseline.time:
                deltas.append(snapshot_delta(baseline, result))
        figures.ready_replicas = len(fresh)
        if not fresh:
            last = max((self._last_success.get(url, -math.inf) for url in urls), default=-math.inf)
            figures.stale = math.isfinite(last) and now - last > self.window_seconds
            return figures
        for name in _GAUGES:
            values = [snapshot.gauges[name] for snapshot in fresh if name in snapshot.gauges]
            if values:
                setattr(figures, name, sum(values) / len(values) if name == "kv_usage" else sum(values))
        if len(fresh) < len(urls):
            figures.problems.append(f"{len(urls) - len(fresh)} of {len(urls)} replicas unreachable: figures are partial")
        if not deltas:
            figures.problems.append("first scrape: rates and percentiles need a second scrape")
            return figures
        if any("e2e" not in delta.counts for delta in deltas):
            figures.problems.append("request latency histogram missing: arrival rate unknown")
            return figures
        figures.finished = sum(delta.counts["e2e"] for delta in deltas)
        figures.request_rate = sum((delta.counts["e2e"] + (delta.backlog_growth or 0.0)
                                    + delta.counters.get("refused", 0.0)) / delta.span for delta in deltas)
        for name in (*_COUNTERS, *OPTIONAL_METRICS):
            if all(name in delta.counters for delta in deltas):
                setattr(figures, name, sum(delta.counters[name] for delta in deltas))
        if figures.refused is not None:
            figures.refused_rate = sum(delta.counters["refused"] / delta.span for delta in deltas)
        for name in OPTIONAL_HISTOGRAMS:
            if all(name in delta.buckets for delta in deltas):
                buckets[name] = {}
        for delta in deltas:
            for name in buckets:
                _add(buckets[name], delta.buckets.get(name, {}))
        figures.prompt_length_buckets = buckets.get("prompt_length") or None
        figures.ttft_p95 = histogram_quantile(0.95, buckets["ttft"])
        figures.itl_p95 = histogram_quantile(0.95, buckets["itl"])
        for name, budget in zip(("ttft", "itl"), budgets, strict=True):
            within = fraction_within(buckets[name], budget)
            if within is None and buckets[name].get(math.inf):
                within = fraction_within(buckets[name], budget, conservative=True)
                figures.problems.append(f"{name} budget {budget:g}s is not a bucket boundary: fraction within "
                                        "budget read from the bucket below it (conservative)")
            setattr(figures, f"{name}_within_budget", within)
        return figures
