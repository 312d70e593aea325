"""The Grafana dashboard for sloserve, built as data so every PromQL expression in it can be checked.

Per ModelService and region: p95 TTFT and ITL against their budgets, the exact fraction within budget,
error budget remaining, request rate, tokens/s, queue and KV cache, replicas by role, and the autoscaler's
decisions. Latency series come from the recording rules of slo_rules.py (PrometheusRule per ModelService);
budgets, objective, replicas and decisions from the operator's own /metrics (operator_metrics.py), which
carry `namespace` and `model_service` labels of the ModelService: scrape the operator with
honor_labels: true (as for kube-state-metrics) so they are not renamed exported_namespace.

`expressions()` lists every query with Grafana's variables replaced by concrete values, for promtool.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sloserve_operator.autoscaler.observe.promql import series

UID = "sloserve-slo"
SELECTOR = 'namespace=~"$namespace",model_service=~"$model_service"'
REGION_SELECTOR = SELECTOR + ',region=~"$region"'
BY_SERVICE = "namespace, model_service"
BY_REGION = "namespace, model_service, region"
# What promtool sees in place of Grafana's variables.
VARIABLE_VALUES = {"$namespace": ".*", "$model_service": ".*", "$region": ".*", "$__rate_interval": "5m",
                   "$__range": "1h"}


def _budget(sli: str) -> str:
    return f'max by ({BY_SERVICE}) (sloserve_operator_slo_budget_seconds{{{SELECTOR},sli="{sli}"}})'


def _objective() -> str:
    return f"max by ({BY_SERVICE}) (sloserve_operator_slo_objective_ratio{{{SELECTOR}}})"


def _error_budget_remaining(sli: str) -> str:
    """1 - (share over budget in the last 3 days) / (share the objective allows), per region."""
    ratio = f"sloserve:{sli}_within_budget:ratio_rate3d{{{REGION_SELECTOR}}}"
    return f"1 - (1 - {ratio}) / on ({BY_SERVICE}) group_left () (1 - {_objective()})"


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr,
            "legendFormat": legend, "refId": ref, "range": True}


def _panel(panel_id: int, title: str, description: str, targets: list[tuple[str, str]], *, unit: str,
           x: int, y: int, w: int = 12, h: int = 8, kind: str = "timeseries",
           thresholds: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
    return {
        "id": panel_id, "type": kind, "title": title, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}}
        if kind == "timeseries" else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [_target(expr, legend, chr(ord("A") + index)) for index, (expr, legend) in enumerate(targets)],
    }


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": f"var-{name}"}, "definition": query, "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
            "sort": 1}


def build_dashboard() -> dict[str, Any]:
    red_green = [{"color": "red", "value": None}, {"color": "green", "value": 0}]
    panels = [
        _panel(1, "p95 time to first token vs budget",
               "Recorded p95 TTFT per region (5m) and the ModelService's spec.slo.ttft.p95 budget.",
               [(f"sloserve:ttft_seconds:p95_rate5m{{{REGION_SELECTOR}}}", "{{model_service}} {{region}} p95"),
                (_budget("ttft"), "{{model_service}} budget")], unit="s", x=0, y=0),
        _panel(2, "p95 inter-token latency vs budget",
               "Recorded p95 ITL per region (5m) and the spec.slo.itl.p95 budget.",
               [(f"sloserve:itl_seconds:p95_rate5m{{{REGION_SELECTOR}}}", "{{model_service}} {{region}} p95"),
                (_budget("itl"), "{{model_service}} budget")], unit="s", x=12, y=0),
        _panel(3, "Fraction within budget (5m)",
               "Exact share of requests (TTFT) and inter-token gaps (ITL) within budget, read from the "
               "histogram bucket at the budget, against the objective.",
               [(f"sloserve:ttft_within_budget:ratio_rate5m{{{REGION_SELECTOR}}}", "{{model_service}} {{region}} TTFT"),
                (f"sloserve:itl_within_budget:ratio_rate5m{{{REGION_SELECTOR}}}", "{{model_service}} {{region}} ITL"),
                (_objective(), "{{model_service}} objective")], unit="percentunit", x=0, y=8),
        _panel(4, "Error budget remaining (3d)",
               "1 - (share over budget in 3 days) / (1 - objective). Below 0: the objective is being missed.",
               [(_error_budget_remaining("ttft"), "{{model_service}} {{region}} TTFT"),
                (_error_budget_remaining("itl"), "{{model_service}} {{region}} ITL")],
               unit="percentunit", x=12, y=8, kind="stat", thresholds=red_green),
        _panel(5, "Request rate", "Finished requests per second per region (recorded, 5m).",
               [(f"sloserve:requests:rate5m{{{REGION_SELECTOR}}}", "{{model_service}} {{region}}")],
               unit="reqps", x=0, y=16),
        _panel(6, "Tokens per second", "Generated and prompt tokens per second per region.",
               [(f"sum by ({BY_REGION}) (rate({series('sloserve:generation_tokens_total', REGION_SELECTOR)}"
                 f"[$__rate_interval]))", "{{model_service}} {{region}} generated"),
                (f"sum by ({BY_REGION}) (rate({series('sloserve:prompt_tokens_total', REGION_SELECTOR)}"
                 f"[$__rate_interval]))", "{{model_service}} {{region}} prompt")], unit="short", x=12, y=16),
        _panel(7, "Replicas by role", "Ready serving and warm pods, and the autoscaler's desired counts.",
               [(f"sum by ({BY_REGION}, role) (sloserve_operator_ready_replicas{{{REGION_SELECTOR}}})",
                 "{{model_service}} {{region}} {{role}} ready"),
                (f"sum by ({BY_REGION}, role) (sloserve_operator_desired_replicas{{{REGION_SELECTOR}}})",
                 "{{model_service}} {{region}} {{role}} desired")], unit="short", x=0, y=24),
        _panel(8, "Autoscaler decisions", "Scale-ups and scale-downs per interval (holds are not drawn).",
               [(f'sum by ({BY_SERVICE}, direction) (increase(sloserve_operator_scaling_decisions_total'
                 f'{{{SELECTOR},direction!="hold"}}[$__rate_interval]))', "{{model_service}} {{direction}}"),
                (f'sum by ({BY_SERVICE}) (increase(sloserve_operator_scaling_decisions_total'
                 f'{{{SELECTOR},metrics_available="false"}}[$__rate_interval]))', "{{model_service}} held: no metrics")],
               unit="short", x=12, y=24),
        _panel(9, "Queue and KV cache", "Waiting requests (sum) and mean KV-cache usage per region.",
               [(f"sum by ({BY_REGION}) ({series('sloserve:num_requests_waiting', REGION_SELECTOR)})",
                 "{{model_service}} {{region}} waiting"),
                (f"avg by ({BY_REGION}) ({series('sloserve:kv_cache_usage_perc', REGION_SELECTOR)})",
                 "{{model_service}} {{region}} KV usage")], unit="short", x=0, y=32),
        _panel(10, "Observed p95 the autoscaler acted on",
               "The operator's own view of p95 latency per region at its last decision.",
               [(f"sloserve_operator_observed_p95_seconds{{{REGION_SELECTOR}}}",
                 "{{model_service}} {{region}} {{metric}}")], unit="s", x=12, y=32),
        _panel(11, "Prompt lengths",
               "Median and p95 prompt length per region: the autoscaler sizes attention by the prompts' "
               "spread, E[L^2] / E[L]^2, read from this histogram, so a widening gap costs capacity.",
               [(f"histogram_quantile({q}, sum by ({BY_REGION}, le) (rate("
                 f"{series('sloserve:request_prompt_tokens_bucket', REGION_SELECTOR)}[$__rate_interval])))",
                 f"{{{{model_service}}}} {{{{region}}}} p{round(q * 100)}") for q in (0.5, 0.95)],
               unit="short", x=0, y=40),
    ]
    return {
        "uid": UID, "title": "sloserve: latency SLOs and autoscaling", "tags": ["sloserve", "llm", "slo"],
        "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("namespace", "Namespace", "label_values(sloserve:requests:rate5m, namespace)"),
            _variable("model_service", "ModelService",
                      'label_values(sloserve:requests:rate5m{namespace=~"$namespace"}, model_service)'),
            _variable("region", "Region",
                      'label_values(sloserve:requests:rate5m{namespace=~"$namespace",'
                      'model_service=~"$model_service"}, region)'),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboard_json() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=False) + "\n"


def substitute(expr: str) -> str:
    """Replace Grafana's variables by values Prometheus accepts."""
    for variable, value in VARIABLE_VALUES.items():
        expr = expr.replace(variable, value)
    if "$" in re.sub(r"\{\{[^}]*\}\}", "", expr):
        raise ValueError(f"unknown Grafana variable left in {expr!r}")
    return expr


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in the panels, variables substituted."""
    return [substitute(target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
