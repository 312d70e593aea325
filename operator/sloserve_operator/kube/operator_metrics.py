"""The operator's own Prometheus metrics (served on --metrics-port at /metrics).

Labels follow the runtime's target labels (namespace, model_service, region) so dashboards can join the
operator's decisions with the latency the runtime reports.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "sloserve_operator_reconciles", "Reconcile passes over a ModelService, by result (ok, invalid, error).",
    ["namespace", "model_service", "result"], registry=REGISTRY,
)
ERRORS = Counter(
    "sloserve_operator_errors", "API or internal errors while handling a ModelService, by kind.",
    ["namespace", "model_service", "kind"], registry=REGISTRY,
)
DECISIONS = Counter(
    "sloserve_operator_scaling_decisions",
    "Autoscaler decisions, by direction (up, down, hold) and whether metrics were available.",
    ["namespace", "model_service", "direction", "metrics_available"], registry=REGISTRY,
)
DESIRED = Gauge(
    "sloserve_operator_desired_replicas", "Replicas the autoscaler wants, by region and role (serving, warm).",
    ["namespace", "model_service", "region", "role"], registry=REGISTRY,
)
READY = Gauge(
    "sloserve_operator_ready_replicas", "Ready pods, by region and role (serving, warm).",
    ["namespace", "model_service", "region", "role"], registry=REGISTRY,
)
OBSERVED = Gauge(
    "sloserve_operator_observed_p95_seconds",
    "p95 latency the autoscaler acted on (metric: ttft or itl); absent when not measured.",
    ["namespace", "model_service", "region", "metric"], registry=REGISTRY,
)
BUDGET = Gauge(
    "sloserve_operator_slo_budget_seconds", "The ModelService's p95 latency budget (sli: ttft or itl).",
    ["namespace", "model_service", "sli"], registry=REGISTRY,
)
OBJECTIVE = Gauge(
    "sloserve_operator_slo_objective_ratio", "Share of requests that must meet the budgets (spec.slo.objective).",
    ["namespace", "model_service"], registry=REGISTRY,
)
PROMOTIONS = Counter(
    "sloserve_operator_promotions", "Warm pods promoted to serving.",
    ["namespace", "model_service", "region"], registry=REGISTRY,
)


def record_replicas(namespace: str, name: str, regions: list[dict], desired_warm: dict[str, int]) -> None:
    """Export status.regions (desired serving, ready serving/warm) and the warm targets."""
    for region in regions:
        labels = (namespace, name, region["name"])
        DESIRED.labels(*labels, "serving").set(region.get("desired", 0))
        DESIRED.labels(*labels, "warm").set(desired_warm.get(region["name"], 0))
        READY.labels(*labels, "serving").set(region.get("serving", 0))
        READY.labels(*labels, "warm").set(region.get("warm", 0))


def record_slo(namespace: str, name: str, ttft_budget: float, itl_budget: float, objective: float) -> None:
    """Budgets and objective as series, so dashboards can draw them next to the observed latency."""
    BUDGET.labels(namespace, name, "ttft").set(ttft_budget)
    BUDGET.labels(namespace, name, "itl").set(itl_budget)
    OBJECTIVE.labels(namespace, name).set(objective)


def record_observed(namespace: str, name: str, region: str, ttft_p95: float | None, itl_p95: float | None) -> None:
    for metric, value in (("ttft", ttft_p95), ("itl", itl_p95)):
        if value is None:
            try:
                OBSERVED.remove(namespace, name, region, metric)
            except KeyError:
                pass
        else:
            OBSERVED.labels(namespace, name, region, metric).set(value)


def forget(namespace: str, name: str) -> None:
    """Drop the gauges of a deleted ModelService so dashboards do not show ghosts."""
    for gauge in (DESIRED, READY, OBSERVED, BUDGET, OBJECTIVE):
        for labels in list(gauge._metrics):  # noqa: SLF001 - prometheus_client has no public label listing
            if labels[0] == namespace and labels[1] == name:
                gauge.remove(*labels)


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Start the /metrics endpoint in a daemon thread."""
    start_http_server(port, addr=addr, registry=REGISTRY)
