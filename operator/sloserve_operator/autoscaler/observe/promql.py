"""PromQL for the autoscaler's figures, per ModelService and per region.

Kept apart from metrics.py so local mode, the Prometheus rules and the dashboard can reuse the exact
expressions the autoscaler evaluates. Every query aggregates `by (region)` over the serving pods of one
ModelService, selected by the target labels the PodMonitor (or local mode's file_sd) attaches:
namespace, model_service, region, role.

Metric names come from engines.ENGINE_METRICS (logical name -> the engine's metric name).

Colon names (`vllm:...`, `sglang:...`, `sloserve:...`) can reach Prometheus with the colons turned into
underscores: prometheus_client (which vLLM and SGLang serve /metrics with) answers a scraper that offers
OpenMetrics without an `escaping` parameter, which is what Prometheus 2.x sends, with `escaping=underscores`
and writes `vllm_time_to_first_token_seconds_bucket` (its HELP/TYPE lines keep the colon). Prometheus 3
asks for `allow-utf-8` and stores the colons; text-format 0.0.4 keeps them too. So every series selector
here matches both spellings (`series`), whatever Prometheus version or scrape protocol is in front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString

from sloserve_operator.api.engines import ENGINE_METRICS, budget_bucket
from sloserve_operator.api.labels import SERVING

LOGICAL_METRICS = (
    "ttft", "itl", "e2e", "queue_time", "running", "waiting", "kv_usage",
    "prompt_tokens", "generation_tokens", "request_success",
)

# Optional: queried when the engine exposes them (the bundled runtime does; vLLM has the prefix-cache pair).
OPTIONAL_METRICS = ("refused", "prefix_cache_queries", "prefix_cache_hits")

# Optional histograms, read bucket by bucket (promql.ServiceQueries.histograms): the prompt-length
# histogram's spread is what the capacity model's attention term needs beyond the mean.
OPTIONAL_HISTOGRAMS = ("prompt_length",)

# Logical names whose metric is a counter: PromQL needs the exposed `_total` name.
COUNTER_METRICS = frozenset({"prompt_tokens", "generation_tokens", "request_success", *OPTIONAL_METRICS})


def engine_metrics(engine: str) -> dict[str, str]:
    """Logical name -> metric name for an engine (bundled, vllm, sglang); ValueError for an unknown one."""
    key = getattr(engine, "value", engine)
    if key not in ENGINE_METRICS:
        raise ValueError(f"unknown engine {key!r}: expected one of {', '.join(sorted(ENGINE_METRICS))}")
    names = dict(ENGINE_METRICS[key])
    missing = [name for name in LOGICAL_METRICS if name not in names]
    if missing:
        raise ValueError(f"engine {key!r} has no metric names for: {', '.join(missing)}")
    return names


def budget_bound(engine: str, logical: str, budget_seconds: float) -> float:
    """The bucket boundary that counts requests within the budget: the budget itself, or for an engine
    with fixed buckets (vLLM) the boundary at or below it (engines.budget_bucket), never flattering."""
    return budget_bucket(engine, logical, budget_seconds)


def exposed_name(logical: str, name: str) -> str:
    """The series name Prometheus stores: counters end in _total whatever the mapping wrote."""
    if logical in COUNTER_METRICS and not name.endswith("_total"):
        return name + "_total"
    return name


def le_regex(bound: float) -> str:
    """A regex matching the `le` label of the bucket at `bound` however the exporter printed it.

    prometheus_client writes 1.0 as "1.0", Go exporters write "1", Prometheus 3 normalises to "1.0";
    matching all spellings keeps the "fraction within budget" exact without depending on which.
    """
    spellings = {floatToGoString(bound), repr(float(bound)), f"{bound:g}"}
    if float(bound).is_integer():
        spellings.add(str(int(bound)))
    return "|".join(re.escape(text) for text in sorted(spellings))


def series(name: str, matchers: str) -> str:
    """A series selector for `name` with label `matchers`, matching the underscore spelling of a colon name
    too (see the module docstring); a plain name stays a plain selector."""
    if ":" not in name:
        return f"{name}{{{matchers}}}"
    spellings = "|".join(re.escape(n) for n in (name, name.replace(":", "_")))
    return f"{{__name__=~{_quote(spellings)}{',' + matchers if matchers else ''}}}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(namespace: str, model_service: str, role: str | None = SERVING, extra: str = "") -> str:
    """Label matchers (without braces' contents repeated) for one ModelService's pods."""
    parts = [f"namespace={_quote(namespace)}", f"model_service={_quote(model_service)}"]
    if role is not None:
        parts.append(f"role={_quote(role)}")
    if extra:
        parts.append(extra)
    return ",".join(parts)


def _duration(seconds: float) -> str:
    return f"{max(int(round(seconds)), 1)}s"


@dataclass(frozen=True)
class ServiceQueries:
    """All PromQL the autoscaler evaluates for one ModelService; each result is a vector by region."""

    namespace: str
    model_service: str
    metrics: Mapping[str, str]
    window_seconds: float
    ttft_budget: float  # the bucket boundaries read for "within budget" (promql.budget_bound)
    itl_budget: float
    quantile: float = 0.95

    def _name(self, logical: str) -> str:
        return exposed_name(logical, self.metrics[logical])

    @property
    def _sel(self) -> str:
        return selector(self.namespace, self.model_service)

    @property
    def _window(self) -> str:
        return _duration(self.window_seconds)

    def latency_quantile(self, logical: str) -> str:
        return (
            f"histogram_quantile({self.quantile}, sum by (region, le) "
            f"(rate({series(self._name(logical) + '_bucket', self._sel)}[{self._window}])))"
        )

    def within_budget(self, logical: str, budget: float) -> str:
        """Exact fraction of observations <= budget: the bucket at the budget over the count."""
        name, window = self._name(logical), self._window
        bucket = selector(self.namespace, self.model_service, extra=f"le=~{_quote(le_regex(budget))}")
        return (
            f"sum by (region) (increase({series(name + '_bucket', bucket)}[{window}])) "
            f"/ sum by (region) (increase({series(name + '_count', self._sel)}[{window}]))"
        )

    def finished(self) -> str:
        """Requests finished in the window (also the confidence behind the percentiles)."""
        return f"sum by (region) (increase({series(self._name('e2e') + '_count', self._sel)}[{self._window}]))"

    def gauge_change(self, logical: str) -> str:
        """Change of a gauge over the window (running + waiting growth: arrivals = finished + growth)."""
        return f"sum by (region) (delta({series(self._name(logical), self._sel)}[{self._window}]))"

    def token_increase(self, logical: str) -> str:
        return f"sum by (region) (increase({series(self._name(logical), self._sel)}[{self._window}]))"

    def bucket_increase(self, logical: str) -> str:
        """A histogram's bucket counts over the window, by region and `le` (the caller does the arithmetic
        PromQL cannot: moments from the bucket bounds)."""
        name = self._name(logical) + "_bucket"
        return f"sum by (region, le) (increase({series(name, self._sel)}[{self._window}]))"

    def histograms(self) -> dict[str, str]:
        """Name -> bucket query for the optional histograms the engine has; each result is a vector by
        region and le."""
        return {name: self.bucket_increase(name) for name in OPTIONAL_HISTOGRAMS if name in self.metrics}

    def gauge_sum(self, logical: str) -> str:
        return f"sum by (region) ({series(self._name(logical), self._sel)})"

    def gauge_mean(self, logical: str) -> str:
        return f"avg by (region) ({series(self._name(logical), self._sel)})"

    def ready_replicas(self) -> str:
        """Serving targets whose last scrape succeeded (0 when all are down, absent when none exist)."""
        return f"sum by (region) (up{{{self._sel}}})"

    def newest_scrape(self) -> str:
        """Unix time of the newest scrape of any of the service's pods (any role), for staleness."""
        return f"max by (region) (timestamp(up{{{selector(self.namespace, self.model_service, role=None)}}}))"

    def all(self) -> dict[str, str]:
        """Name -> query, the full set metrics.PrometheusSource evaluates each interval (the optional
        counters only for an engine that has them)."""
        optional = {name: self.token_increase(name) for name in OPTIONAL_METRICS if name in self.metrics}
        return {**optional,
            "ttft_p95": self.latency_quantile("ttft"),
            "itl_p95": self.latency_quantile("itl"),
            "ttft_within_budget": self.within_budget("ttft", self.ttft_budget),
            "itl_within_budget": self.within_budget("itl", self.itl_budget),
            "finished": self.finished(),
            "running_change": self.gauge_change("running"),
            "waiting_change": self.gauge_change("waiting"),
            "prompt_tokens": self.token_increase("prompt_tokens"),
            "generation_tokens": self.token_increase("generation_tokens"),
            "running": self.gauge_sum("running"),
            "waiting": self.gauge_sum("waiting"),
            "kv_usage": self.gauge_mean("kv_usage"),
            "ready_replicas": self.ready_replicas(),
            "newest_scrape": self.newest_scrape(),
        }
