"""The real operator against kmock with the Prometheus operator's CRDs present, and an API server that fails.

- monitoring.coreos.com served: PodMonitor (and PrometheusRule when rendered) are created, Degraded=False.
- a 503 on the first write is retried with backoff and the object converges;
- a 403 is permanent: it is reported in status (Ready=False, ApplyFailed) and not retried in a loop.
"""

from __future__ import annotations

import kmock
import pytest
from operator_harness import wait_for

FAILING = {"flaky": 503, "locked": 403}


def install_failures(cluster) -> None:
    """The first Deployment create in namespace `flaky` answers 503; every PDB create in `locked` 403."""
    first_seen: dict[str, int] = {}

    def failing(request) -> bool:
        if request.action != kmock.action.CREATE or request.resource is None:
            return False
        if request.namespace == "flaky" and request.resource.plural == "deployments":
            first_seen.setdefault("flaky", request.id)
            return request.id == first_seen["flaky"]
        return request.namespace == "locked" and request.resource.plural == "poddisruptionbudgets"

    def status_of(request) -> dict:
        code = FAILING[request.namespace]
        return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
                "reason": "ServiceUnavailable" if code == 503 else "Forbidden",
                "message": f"injected {code} for {request.resource.plural}"}

    cluster.emulator[failing] << (lambda request: kmock.Response(status=FAILING[request.namespace],
                                                                  payload=status_of(request)))


@pytest.fixture(scope="module")
def operator(operator_factory):
    # Long drift interval: what is asserted here must come from the change handlers and their retries.
    return operator_factory(monitoring=True, drift_interval=300.0, autoscale_interval=1.0, setup=install_failures)


@pytest.fixture
def op(operator):
    yield operator
    operator.cleanup()


def test_monitoring_objects_when_the_prometheus_operator_is_installed(op):
    created = op.create("watched")
    monitor = wait_for(lambda: op.cluster.objects("monitoring.coreos.com/v1/podmonitors").get("watched"),
                       what="PodMonitor watched")
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    wait_for(lambda: (op.condition("watched", "Degraded") or {}).get("status") == "False", what="Degraded=False")
    deployment = op.cluster.objects("apps/v1/deployments")["watched"]
    assert "prometheus.io/scrape" not in (deployment["spec"]["template"]["metadata"].get("annotations") or {})


def test_transient_error_is_retried_until_it_converges(op):
    op.create("retry", namespace="flaky")
    wait_for(lambda: any(event.get("reason") == "ApplyFailed" and "503" in event.get("message", "")
                         for event in op.events("retry", "flaky")), what="an ApplyFailed Event for the 503")

    def deployment_lists() -> int:
        return op.cluster.call(lambda: len([
            request for request in list(op.cluster.emulator)
            if request.action == kmock.action.LIST and request.namespace == "flaky"
            and request.resource is not None and request.resource.plural == "deployments"]))

    # Each reconcile lists the Deployments once; with the drift check 300 s away, a second list is the retry.
    wait_for(lambda: deployment_lists() >= 2, what="a retried reconcile")
    ready = wait_for(lambda: op.condition_in("flaky", "retry", "Ready"), what="Ready condition")
    assert ready["reason"] == "ReplicasNotReady"  # applied; only pods are missing (kmock runs no kubelet)
    assert "retry" in op.cluster.objects("apps/v1/deployments", "flaky")


def test_forbidden_is_reported_in_status_and_not_retried(op):
    op.create("denied", namespace="locked")

    def apply_failed() -> dict | None:
        ready = op.condition_in("locked", "denied", "Ready") or {}
        return ready if ready.get("reason") == "ApplyFailed" else None

    ready = wait_for(apply_failed, what="Ready=False ApplyFailed")
    assert ready["status"] == "False" and "403" in ready["message"] and "PodDisruptionBudget" in ready["message"]
    # The Deployment and Service were still written: one forbidden kind does not block the rest.
    assert "denied" in op.cluster.objects("apps/v1/deployments", "locked")
    posts = wait_for(lambda: op.cluster.call(lambda: len([
        request for request in list(op.cluster.emulator)
        if request.action == kmock.action.CREATE and request.namespace == "locked"
        and request.resource is not None and request.resource.plural == "poddisruptionbudgets"])),
        what="the PDB create request")
    assert posts == 1
