"""The autoscale timer wired end to end in the real operator: observe -> policy.decide -> act -> status.

The metrics source is the MetricsSource contract fed with a fixed breach (PrometheusSource itself is tested
against a real Prometheus in tests/autoscaler/observe); everything after it is the real code: the policy, the
actuator's pod-label promotion and Deployment scaling through kmock, status, Events and /metrics.
"""

from __future__ import annotations

import pytest
from operator_harness import BreachingSource, fake_pod, wait_for
from prometheus_client import generate_latest
from quickstart_spec import QUICKSTART_SPEC
from sloserve_operator.autoscaler.observe.observation import Observation, RegionObservation
from sloserve_operator.kube.operator_metrics import REGISTRY


@pytest.fixture(scope="module")
def op(operator_factory):
    operator = operator_factory(monitoring=True, drift_interval=2.0, autoscale_interval=0.5,
                                source=BreachingSource())
    yield operator
    operator.cleanup()


def test_breach_scales_up_promotes_the_warm_pod_and_reports(op):
    op.create("hot")  # quickstart sizing: min 1, max 3, warm pool 1
    deployment = wait_for(lambda: op.cluster.objects("apps/v1/deployments").get("hot"), what="Deployment hot")
    for index in range(2):
        op.kube.create(fake_pod(deployment, index))

    status = wait_for(lambda: ((op.msvc("hot").get("status") or {}).get("desiredReplicas") or 0) >= 2
                      and op.msvc("hot")["status"], what="a scale-up decision")
    assert status["lastDecision"]["to"] >= 2 and status["lastDecision"]["from"] >= 1
    assert "ttft" in status["lastDecision"]["reason"].lower()
    assert status["observed"]["ttftP95"] == "3000ms" and status["observed"]["withinBudget"] == 0.5
    assert op.condition("hot", "SLOMet")["reason"] == "BudgetExceeded"
    assert op.condition("hot", "MetricsAvailable")["status"] == "True"
    # serving target + the warm pool: the Deployment grows beyond the two pods that exist.
    wait_for(lambda: op.cluster.objects("apps/v1/deployments")["hot"]["spec"]["replicas"] >= 3,
             what="Deployment scaled to serving + warm")

    # Roles are label patches on the existing ready pods (no cold start): both pods now serve.
    def roles() -> list[str]:
        return sorted(pod["metadata"]["labels"]["sloserve.io/role"]
                      for name, pod in op.cluster.objects("v1/pods").items() if name.startswith("hot-pod-"))

    wait_for(lambda: roles() == ["serving", "serving"], what="both pods serving")
    wait_for(lambda: {"ScaledUp", "BudgetExceeded"} <= op.reasons("hot"), what="ScaledUp and SLO Events")

    exposition = generate_latest(REGISTRY).decode()
    assert 'sloserve_operator_scaling_decisions_total{direction="up",metrics_available="true",' \
           'model_service="hot",namespace="default"}' in exposition
    assert 'sloserve_operator_desired_replicas{model_service="hot",namespace="default",region="default",' \
           'role="serving"}' in exposition


class OneRegionBreaching:
    """Region us-east reports p95 TTFT at 3x its budget; every other region of the service is comfortable."""

    def observe(self, service, now: float) -> Observation:
        def region(name: str) -> RegionObservation:
            hot = name == "us-east"
            return RegionObservation(
                region=name, window_seconds=60.0, ready_replicas=1, request_rate=4.0 if hot else 0.5,
                ttft_p95=3.0 if hot else 0.1, itl_p95=0.05, ttft_within_budget=0.5 if hot else 1.0,
                itl_within_budget=0.99, mean_prompt_tokens=200.0, mean_output_tokens=100.0,
                running=8.0 if hot else 1.0, waiting=12.0 if hot else 0.0, kv_usage=0.5, requests_observed=240.0,
            )

        return Observation(time=now, regions={r.name: region(r.name) for r in service.spec.placement.regions})


def metric_value(exposition: str, series: str) -> float | None:
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_a_promotion_is_counted_in_the_region_of_the_promoted_pod(operator_factory):
    """Region names that prefix one another (us, us-east): the pod us-east promotes is named
    `multi-us-east-pod-0`, which a guess from the name put in region us (both regions scale up here, so
    without the actuator's region every promotion was counted in us)."""
    op = operator_factory(monitoring=True, drift_interval=2.0, autoscale_interval=0.5, source=OneRegionBreaching())
    try:
        spec = {**QUICKSTART_SPEC, "scaling": {"mode": "slo", "minReplicas": 2, "maxReplicas": 6, "warmPool": {"size": 2}},
                "placement": {"regions": [{"name": "us", "weight": 1}, {"name": "us-east", "weight": 1}]}}
        op.create("multi", spec)
        for deployment_name in ("multi-us", "multi-us-east"):
            deployment = wait_for(lambda n=deployment_name: op.cluster.objects("apps/v1/deployments").get(n),
                                  what=f"Deployment {deployment_name}")
            for index in range(2):  # started warm: whatever the first decision, serving pods come by promotion
                pod = fake_pod(deployment, index)
                pod["metadata"]["labels"]["sloserve.io/role"] = "warm"
                op.kube.create(pod)
        series = 'sloserve_operator_promotions_total{{model_service="multi",namespace="default",region="{}"}}'
        wait_for(lambda: metric_value(generate_latest(REGISTRY).decode(), series.format("us-east")), timeout=30,
                 what="a promotion counted in us-east")
    finally:
        op.cleanup()


def test_reconcile_keeps_the_warm_target_on_metrics(operator_factory):
    """Only reconcile runs here (the autoscale timer's first tick is an hour away): the desired warm replicas
    on /metrics are the warm pool reconcile applied, not 0."""
    op = operator_factory(drift_interval=0.5, autoscale_interval=3600.0)
    try:
        op.create("warmgauge")  # quickstart: warm pool 1
        series = ('sloserve_operator_desired_replicas{{model_service="warmgauge",namespace="default",'
                  'region="default",role="{}"}}')
        wait_for(lambda: metric_value(generate_latest(REGISTRY).decode(), series.format("serving")) is not None,
                 what="reconcile recorded the replicas")
        assert metric_value(generate_latest(REGISTRY).decode(), series.format("warm")) == 1.0
    finally:
        op.cleanup()
