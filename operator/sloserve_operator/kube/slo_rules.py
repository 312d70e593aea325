"""Prometheus rules for one ModelService: SLI recording rules and multi-window burn-rate alerts.

SLIs, per (namespace, model_service, region), for each window in WINDOWS:
- `sloserve:ttft_within_budget:ratio_rate<w>`: share of requests whose first token came within the TTFT
  budget, read exactly from the histogram bucket at the budget (the runtime puts a boundary there);
- `sloserve:itl_within_budget:ratio_rate<w>`: the same for inter-token gaps and the ITL budget;
- `sloserve:ttft_seconds:p95_rate5m`, `sloserve:itl_seconds:p95_rate5m`: the percentiles the budgets name;
- `sloserve:requests:rate5m`: finished requests per second.

The objective (spec.slo.objective, e.g. 99%) leaves an error budget of 1 - objective: the share of requests
(or gaps) allowed over budget. Alerts follow the Google SRE workbook's multi-window, multi-burn-rate scheme:
an alert fires when the error ratio exceeds `factor x budget` over both a long window (the burn is
significant) and a short one (it is still happening), so it stops soon after the problem does:

    page    1h  and 5m    14.4x   (2% of a 30-day budget in an hour)
    page    6h  and 30m    6x     (5% in six hours)
    ticket  3d  and 6h     1x     (10% in three days)

With no traffic both ratios are NaN and nothing fires; missing data never pages. If factor x budget >= 1
(an objective of 93% or lower for the fast alert) that alert cannot fire; choose a tighter objective.
The rules read each engine's own metric names (engines.ENGINE_METRICS); for vLLM, whose buckets are fixed,
"within budget" uses the largest boundary at or below the budget (engines.budget_bucket). Colon names are
matched in both spellings (promql.series: Python exporters write them with underscores when Prometheus
negotiates OpenMetrics).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from prometheus_client.utils import floatToGoString

from sloserve_operator.api.engines import ENGINE_METRICS, budget_bucket
from sloserve_operator.api.spec import ModelService
from sloserve_operator.api.units import format_ms
from sloserve_operator.autoscaler.observe.promql import series

WINDOWS = ("5m", "30m", "1h", "6h", "3d")
SLI_BY = "namespace, model_service, region"
RECORD_WITHIN = "sloserve:{sli}_within_budget:ratio_rate{window}"
RECORD_P95 = "sloserve:{sli}_seconds:p95_rate5m"
RECORD_REQUESTS = "sloserve:requests:rate5m"
EVALUATION_INTERVAL = "30s"


@dataclass(frozen=True)
class BurnAlert:
    speed: str
    long_window: str
    short_window: str
    factor: float
    severity: str
    for_: str


BURN_ALERTS = (
    BurnAlert("Fast", "1h", "5m", 14.4, "page", "2m"),
    BurnAlert("Slow", "6h", "30m", 6.0, "page", "5m"),
    BurnAlert("Long", "3d", "6h", 1.0, "ticket", "30m"),
)

_SLI_TITLES = {"ttft": ("TTFT", "requests", "time to first token"),
               "itl": ("ITL", "inter-token gaps", "inter-token latency")}


def _selector(service: ModelService) -> str:
    return f'namespace="{service.metadata.namespace}",model_service="{service.metadata.name}"'


def _number(value: float) -> str:
    return f"{value:.6g}"


def budget_seconds(service: ModelService, sli: str) -> float:
    slo = service.spec.slo
    return slo.ttft.p95_seconds if sli == "ttft" else slo.itl.p95_seconds


def budget_le(service: ModelService, sli: str) -> str:
    """The `le` label value of the bucket that counts events within the budget (Prometheus client format)."""
    return floatToGoString(budget_bucket(service.spec.engine, sli, budget_seconds(service, sli)))


def budget_le_regex(service: ModelService, sli: str) -> str:
    """A regex for that `le` however the exporter spells the number ("1.0" from Python clients, "1" from Go
    ones; Prometheus 3 normalises to "1.0"), so the ratio stays exact whichever scraped it."""
    bound = budget_bucket(service.spec.engine, sli, budget_seconds(service, sli))
    spellings = {floatToGoString(bound), repr(float(bound)), f"{bound:g}"}
    if float(bound).is_integer():
        spellings.add(str(int(bound)))
    return "|".join(re.escape(text).replace("\\", "\\\\") for text in sorted(spellings))


def within_budget_expr(service: ModelService, sli: str, window: str) -> str:
    """Share of events within budget over `window`: bucket at the budget / all, per region."""
    metric = ENGINE_METRICS[service.spec.engine.value][sli]
    selector = _selector(service)
    le = budget_le_regex(service, sli)
    buckets = series(f"{metric}_bucket", f'{selector},le=~"{le}"')
    return (f"sum by ({SLI_BY}) (rate({buckets}[{window}]))"
            f" / sum by ({SLI_BY}) (rate({series(f'{metric}_count', selector)}[{window}]))")


def _recording_rules(service: ModelService) -> list[dict[str, Any]]:
    metrics = ENGINE_METRICS[service.spec.engine.value]
    selector = _selector(service)
    rules: list[dict[str, Any]] = []
    for sli in ("ttft", "itl"):
        for window in WINDOWS:
            rules.append({"record": RECORD_WITHIN.format(sli=sli, window=window),
                          "expr": within_budget_expr(service, sli, window)})
        rules.append({
            "record": RECORD_P95.format(sli=sli),
            "expr": (f"histogram_quantile(0.95, sum by ({SLI_BY}, le) "
                     f"(rate({series(f'{metrics[sli]}_bucket', selector)}[5m])))"),
        })
    rules.append({"record": RECORD_REQUESTS,
                  "expr": f"sum by ({SLI_BY}) (rate({series(metrics['request_success'], selector)}[5m]))"})
    return rules


def alert_name(sli: str, alert: BurnAlert) -> str:
    return f"Sloserve{_SLI_TITLES[sli][0]}BudgetBurn{alert.speed}"


def _alert_rules(service: ModelService) -> list[dict[str, Any]]:
    error_budget = 1.0 - service.spec.slo.objective_fraction
    selector = _selector(service)
    rules: list[dict[str, Any]] = []
    for sli in ("ttft", "itl"):
        title, events, long_title = _SLI_TITLES[sli]
        budget_text = format_ms(budget_seconds(service, sli))
        for alert in BURN_ALERTS:
            threshold = _number(alert.factor * error_budget)
            long_series = RECORD_WITHIN.format(sli=sli, window=alert.long_window)
            short_series = RECORD_WITHIN.format(sli=sli, window=alert.short_window)
            rules.append({
                "alert": alert_name(sli, alert),
                "expr": (f"(1 - {long_series}{{{selector}}}) > {threshold}"
                         f" and (1 - {short_series}{{{selector}}}) > {threshold}"),
                "for": alert.for_,
                "labels": {"severity": alert.severity, "slo": sli},
                "annotations": {
                    "summary": (f"{{{{ $labels.model_service }}}} in {{{{ $labels.region }}}} burns its {title} "
                                f"error budget {_number(alert.factor)}x too fast"),
                    "description": (
                        f"{{{{ $value | humanizePercentage }}}} of {events} over the last {alert.long_window} "
                        f"(and still over the last {alert.short_window}) exceeded the {budget_text} "
                        f"{long_title} budget; the objective {service.spec.slo.objective} allows "
                        f"{_number(error_budget * 100)}%."
                    ),
                },
            })
    return rules


def group_prefix(service: ModelService) -> str:
    return f"sloserve.{service.metadata.namespace}.{service.metadata.name}"


def rule_groups(service: ModelService) -> list[dict[str, Any]]:
    """Plain Prometheus rule groups (a rule file's `groups:`), usable by promtool and local mode."""
    prefix = group_prefix(service)
    return [
        {"name": f"{prefix}.sli", "interval": EVALUATION_INTERVAL, "rules": _recording_rules(service)},
        {"name": f"{prefix}.burn-rate", "interval": EVALUATION_INTERVAL, "rules": _alert_rules(service)},
    ]


def prometheus_rule(service: ModelService) -> dict[str, Any]:
    """The rule groups as a PrometheusRule (monitoring.coreos.com/v1) object named `<name>-slo`."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": f"{service.metadata.name}-slo", "namespace": service.metadata.namespace},
        "spec": {"groups": rule_groups(service)},
    }
