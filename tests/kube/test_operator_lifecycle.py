"""The real operator (kopf) against kmock: create, update, invalid spec, removed regions, delete.

Pod roles, the scale subresource, drift repair and finalizers are tested against the real API server in
tests/cluster, which does them better (a real ReplicaSet, server defaults, a garbage collector).

No Prometheus here: the autoscaler observes nothing and holds, which is what this suite needs (it tests
the operator's wiring, not the policy). Pods are created by the test, as kmock runs no controllers.
"""

from __future__ import annotations

import copy
import time

import pytest
from operator_harness import fake_pod, wait_for
from quickstart_spec import QUICKSTART_SPEC


@pytest.fixture(scope="module")
def operator(operator_factory):
    return operator_factory(monitoring=False, drift_interval=1.0, autoscale_interval=0.5)


@pytest.fixture
def op(operator):
    yield operator
    operator.cleanup()


def deployments(op, name: str) -> dict:
    return {key: obj for key, obj in op.cluster.objects("apps/v1/deployments").items()
            if obj["metadata"]["labels"].get("sloserve.io/model-service") == name}


def test_create_makes_owned_children_status_and_events(op):
    created = op.create("chat")
    uid = created["metadata"]["uid"]

    deployment = wait_for(lambda: op.cluster.objects("apps/v1/deployments").get("chat"), what="Deployment chat")
    service = wait_for(lambda: op.cluster.objects("v1/services").get("chat"), what="Service chat")
    for child in (deployment, service):
        reference = child["metadata"]["ownerReferences"][0]
        assert reference["uid"] == uid and reference["kind"] == "ModelService" and reference["controller"] is True
    # minReplicas 1 serving + warmPool 1 warm.
    assert deployment["spec"]["replicas"] == 2

    status = wait_for(lambda: (op.msvc("chat").get("status") or {}).get("selector") and op.msvc("chat")["status"],
                      what="status written")
    assert status["observedGeneration"] == 1
    assert status["selector"] == "sloserve.io/model-service=chat,sloserve.io/role=serving"
    assert op.condition("chat", "Ready")["status"] == "False"  # no pod is ready yet
    # No monitoring.coreos.com API in this cluster: PodMonitor skipped, scrape annotations, Degraded says so.
    assert op.condition("chat", "Degraded")["reason"] == "PrometheusOperatorMissing"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    wait_for(lambda: "Created" in op.reasons("chat"), what="Created events")


def test_removed_region_loses_its_children_once_the_rest_serve(op):
    spec = copy.deepcopy(QUICKSTART_SPEC)
    spec["placement"] = {"regions": [{"name": "east", "weight": 3, "minReplicas": 1}, {"name": "west", "weight": 1}]}
    op.create("geo", spec)
    wait_for(lambda: {"geo-east", "geo-west"} <= set(deployments(op, "geo")), what="two regional Deployments")
    op.kube.patch("ModelService", "default", "geo",
                  {"spec": {"placement": {"regions": [{"name": "east", "weight": 3, "minReplicas": 1}]}}})
    # east has no ready pod yet (kmock runs no kubelet): west is held, and status says why.
    held = wait_for(lambda: (op.condition("geo", "Progressing") or {}).get("reason") == "RegionHandover"
                    and op.condition("geo", "Progressing"), what="Progressing=RegionHandover")
    assert "west" in held["message"] and "east 0/1" in held["message"], held
    assert "geo-west" in deployments(op, "geo")
    op.kube.create(fake_pod(deployments(op, "geo")["geo-east"], 0))
    wait_for(lambda: set(deployments(op, "geo")) == {"geo-east"}, what="geo-west deleted")
    wait_for(lambda: "Deleted" in op.reasons("geo"), what="a Deleted Event")


def test_invalid_update_touches_no_child(op):
    op.create("strict")
    wait_for(lambda: op.condition("strict", "Ready"), what="first reconcile")
    # Let the first writes settle, then count versions of every child.
    time.sleep(1.5)
    before = {name: op.cluster.versions("apps/v1/deployments", name) for name in deployments(op, "strict")}
    before["svc"] = op.cluster.versions("v1/services", "strict")
    # A rule only the operator checks (the CRD schema is not installed in kmock): min above max.
    op.kube.patch("ModelService", "default", "strict", {"spec": {"scaling": {"minReplicas": 5, "maxReplicas": 2}}})
    def invalid_condition() -> dict | None:
        ready = op.condition("strict", "Ready") or {}
        return ready if ready.get("reason") == "InvalidSpec" else None

    condition = wait_for(invalid_condition, what="Ready=False InvalidSpec")
    assert condition["status"] == "False" and "minReplicas" in condition["message"]
    wait_for(lambda: "InvalidSpec" in op.reasons("strict"), what="an InvalidSpec Event")
    time.sleep(2.5)  # two drift checks and several autoscale ticks: none may write a child
    after = {name: op.cluster.versions("apps/v1/deployments", name) for name in deployments(op, "strict")}
    after["svc"] = op.cluster.versions("v1/services", "strict")
    assert after == before
