"""The real operator (kopf) against kmock: create, scale, update, drift, invalid spec, delete.

No Prometheus here: the autoscaler observes nothing and holds, which is what this suite needs (it tests
the operator's wiring, not the policy). Pods are created by the test, as kmock runs no controllers.
"""

from __future__ import annotations

import copy
import time

import pytest
from operator_harness import QUICKSTART_SPEC, fake_pod, wait_for


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


def test_ready_pods_become_serving_and_warm(op):
    op.create("pool")
    deployment = wait_for(lambda: op.cluster.objects("apps/v1/deployments").get("pool"), what="Deployment pool")
    for index in range(2):
        op.kube.create(fake_pod(deployment, index))

    def roles() -> list[str]:
        pods = op.cluster.objects("v1/pods")
        return sorted(pod["metadata"]["labels"]["sloserve.io/role"] for name, pod in pods.items()
                      if name.startswith("pool-pod-"))

    # One serving (minReplicas) and one in the warm pool, whatever role the template starts pods in.
    wait_for(lambda: roles() == ["serving", "warm"], what="one serving and one warm pod")
    expected = {"serving": 1, "warm": 1, "replicas": 2,
                "regions": [{"name": "default", "desired": 1, "serving": 1, "warm": 1, "pending": 0}]}

    def counts() -> dict:
        status = op.msvc("pool").get("status") or {}
        return {key: status.get(key) for key in expected}

    wait_for(lambda: counts() == expected, what=f"status counts {expected}")
    wait_for(lambda: op.condition("pool", "Ready")["status"] == "True", what="Ready=True")
    assert op.condition("pool", "MetricsAvailable")["status"] == "False"  # no Prometheus: hold, say so
    pods = op.cluster.objects("v1/pods")
    costs = {pods[name]["metadata"]["labels"]["sloserve.io/role"]:
             pods[name]["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"]
             for name in pods if name.startswith("pool-pod-")}
    assert int(costs["serving"]) > int(costs["warm"])  # the ReplicaSet removes warm pods first


def test_scale_subresource_sets_serving_in_manual_mode(op):
    spec = copy.deepcopy(QUICKSTART_SPEC)
    spec["scaling"] = {"mode": "manual", "minReplicas": 1, "maxReplicas": 8, "warmPool": {"size": 0}}
    spec["replicas"] = 1
    op.create("manual", spec)
    wait_for(lambda: (op.cluster.objects("apps/v1/deployments").get("manual") or {}).get("spec", {}).get("replicas") == 1,
             what="1 replica")
    # `kubectl scale msvc manual --replicas 4` writes spec.replicas through the scale subresource.
    op.kube.patch("ModelService", "default", "manual", {"spec": {"replicas": 4}}, subresource="scale")
    wait_for(lambda: op.cluster.objects("apps/v1/deployments")["manual"]["spec"]["replicas"] == 4, what="4 replicas")
    wait_for(lambda: (op.msvc("manual").get("status") or {}).get("desiredReplicas") == 4, what="desiredReplicas 4")
    wait_for(lambda: "Patched" in op.reasons("manual") or "Scaled" in op.reasons("manual"), what="a scaling Event")


def test_removed_region_loses_its_children(op):
    spec = copy.deepcopy(QUICKSTART_SPEC)
    spec["placement"] = {"regions": [{"name": "east", "weight": 3, "minReplicas": 1}, {"name": "west", "weight": 1}]}
    op.create("geo", spec)
    wait_for(lambda: {"geo-east", "geo-west"} <= set(deployments(op, "geo")), what="two regional Deployments")
    op.kube.patch("ModelService", "default", "geo",
                  {"spec": {"placement": {"regions": [{"name": "east", "weight": 3, "minReplicas": 1}]}}})
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


def test_drift_is_repaired_but_server_defaults_are_left_alone(op):
    op.create("drifty")
    wait_for(lambda: op.cluster.objects("apps/v1/deployments").get("drifty"), what="Deployment drifty")
    # A field the API server would default (we do not set it) must not cause patches.
    op.kube.patch("Deployment", "default", "drifty", {"spec": {"template": {"spec": {"dnsPolicy": "ClusterFirst"}}}})
    time.sleep(1.5)
    settled = op.cluster.versions("apps/v1/deployments", "drifty")
    time.sleep(2.5)
    assert op.cluster.versions("apps/v1/deployments", "drifty") == settled
    # A field we own, changed by hand, is put back by the periodic drift check.
    op.kube.patch("Deployment", "default", "drifty", {"spec": {"revisionHistoryLimit": 99}})
    wait_for(lambda: op.cluster.objects("apps/v1/deployments")["drifty"]["spec"]["revisionHistoryLimit"] != 99,
             what="revisionHistoryLimit restored")
    assert op.cluster.objects("apps/v1/deployments")["drifty"]["spec"]["template"]["spec"]["dnsPolicy"] == "ClusterFirst"


def test_no_finalizer_is_added_and_an_old_one_is_removed(op):
    """Timers would make kopf add one (it would outlive an uninstalled operator and hang deletion)."""
    op.create("gone")
    wait_for(lambda: op.condition("gone", "Ready"), what="reconciled")
    assert not op.msvc("gone")["metadata"].get("finalizers")
    # One left by an older operator version is released.
    op.kube.patch("ModelService", "default", "gone", {"metadata": {"finalizers": ["sloserve.io/finalizer"]}})
    wait_for(lambda: not op.msvc("gone")["metadata"].get("finalizers"), what="old finalizer removed")
    op.cleanup()  # deletes it and waits until it is gone
    # Children are garbage-collected by the API server through their ownerReferences (e2e/ checks that;
    # kmock has no garbage collector).
