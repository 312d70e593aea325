"""Day-2 behaviour on the real API server (issue 16): no finalizer that outlives the operator, canonicalised
quantities are not drift, and the health endpoint tells how long ago the handlers last succeeded."""

from __future__ import annotations

import copy
import json
import urllib.request

import pytest
from cluster_harness import wait_for
from quickstart_spec import QUICKSTART_SPEC

pytestmark = pytest.mark.usefixtures("operator")
DRIFT_CHECK_DONE = "Timer 'drift-check' succeeded"


def health(operator) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.health_port}/healthz", timeout=5) as answer:
        return json.loads(answer.read())


def msvc_events(cluster, namespace: str, name: str) -> list[str]:
    return [e.reason for e in cluster.core.list_namespaced_event(namespace).items
            if e.involved_object.kind == "ModelService" and e.involved_object.name == name]


def test_no_finalizer_so_deletion_never_waits_for_the_operator(cluster, namespace):
    cluster.create_msvc("chat", namespace)
    wait_for(lambda: cluster.deployments(namespace), timeout=60, what="the Deployment")
    wait_for(lambda: cluster.condition("chat", namespace, "Ready"), timeout=60, what="status written")
    assert not cluster.msvc("chat", namespace)["metadata"].get("finalizers")
    # One left by an older operator version (it used timers, so kopf added one) is released.
    cluster.custom.patch_namespaced_custom_object("sloserve.io", "v1alpha1", namespace, "modelservices", "chat",
                                                  {"metadata": {"finalizers": ["sloserve.io/finalizer"]}})
    wait_for(lambda: not cluster.msvc("chat", namespace)["metadata"].get("finalizers"), timeout=30,
             what="the old finalizer removed")
    cluster.custom.delete_namespaced_custom_object("sloserve.io", "v1alpha1", namespace, "modelservices", "chat")
    wait_for(lambda: cluster.msvc("chat", namespace) is None, timeout=30, what="ModelService gone")
    # Its children go with it, by owner references (the real garbage collector).
    wait_for(lambda: not cluster.deployments(namespace), timeout=60, what="Deployments garbage-collected")


def test_canonicalised_quantities_are_not_patched_again_and_again(cluster, namespace, operator):
    """The server stores "0.5" as "500m" and "1024Mi" as "1Gi"; a string diff re-patched every drift check."""
    spec = copy.deepcopy(QUICKSTART_SPEC)
    spec["resources"] = {"gpus": 0, "cpu": "0.5", "memory": "1024Mi"}
    cluster.create_msvc("chat", namespace, spec)
    deployment = wait_for(lambda: cluster.deployments(namespace), timeout=60, what="the Deployment")[0]
    requests = deployment.spec.template.spec.containers[0].resources.requests
    assert (requests["cpu"], requests["memory"]) == ("500m", "1Gi")  # what the server made of them

    # Let several drift checks (every 2 s here) pass after the Deployment exists; each one logs a line.
    done = operator.log().count(DRIFT_CHECK_DONE)
    wait_for(lambda: operator.log().count(DRIFT_CHECK_DONE) >= done + 4, timeout=60, what="four drift checks")
    reasons = msvc_events(cluster, namespace, "chat")
    assert "Patched" not in reasons, reasons


def test_health_reports_handler_ages(operator, cluster, namespace):
    cluster.create_msvc("chat", namespace)
    report = wait_for(lambda: (h := health(operator)["handlers"])["lastAutoscaleAgeSeconds"] is not None and h,
                      timeout=60, what="an autoscale tick reported")
    assert report["lastReconcileAgeSeconds"] is not None
    assert report["lastAutoscaleAgeSeconds"] < 60
