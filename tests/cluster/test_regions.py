"""Regions on a real scheduler: the nodes are all in us-east-1 (conftest.NODES), so pods placed in
eu-west-1 stay Pending (Unschedulable); after placement.pendingTimeout the operator moves that region's
deficit to us-east-1 and says so in the Degraded condition."""

from __future__ import annotations

import threading
import time

import pytest
from cluster_harness import wait_for
from quickstart_spec import QUICKSTART_SPEC

pytestmark = pytest.mark.usefixtures("operator")

SELECTOR = "sloserve.io/model-service=chat"


def test_region_without_nodes_stays_pending_then_spills(cluster, namespace):
    spec = {**QUICKSTART_SPEC,
            "scaling": {"mode": "slo", "minReplicas": 2, "maxReplicas": 4, "warmPool": {"size": 0}},
            "placement": {"regions": [{"name": "us-east-1"}, {"name": "eu-west-1"}], "pendingTimeout": "6s"}}
    cluster.create_msvc("chat", namespace, spec)

    def pending_in_eu():
        pods = cluster.live_pods(namespace, "sloserve.io/model-service=chat,sloserve.io/region=eu-west-1")
        if pods and all(p.spec.node_name is None for p in pods):
            return pods
        return None

    pods = wait_for(pending_in_eu, timeout=60, what="eu-west-1 pods Pending", explain=lambda: cluster.describe(namespace))
    scheduled = wait_for(lambda: _refresh(cluster, pods[0]), timeout=30, what="PodScheduled condition", explain=lambda: cluster.describe(namespace))
    assert scheduled.status == "False" and scheduled.reason == "Unschedulable", scheduled
    # Status names the pods the scheduler cannot place, with its reason, until the spill moves the deficit.
    progressing = wait_for(lambda: _reason(cluster, namespace, "Progressing", "PodsPending"), timeout=30,
                           what="Progressing=PodsPending", explain=lambda: cluster.describe(namespace))
    assert "eu-west-1" in progressing["message"] and "node" in progressing["message"], progressing
    us_pods = cluster.ready_pods(namespace, "sloserve.io/model-service=chat,sloserve.io/region=us-east-1")
    assert us_pods and all(p.spec.node_name in ("node-a", "node-b") for p in us_pods)

    degraded = wait_for(lambda: _degraded(cluster, namespace), timeout=60, what="Degraded=True naming eu-west-1", explain=lambda: cluster.describe(namespace))
    assert "eu-west-1" in degraded["message"] and "us-east-1" in degraded["message"], degraded
    # The deficit went to the region with nodes: both serving replicas now run there.
    wait_for(lambda: cluster.apps.read_namespaced_deployment("chat-us-east-1", namespace).spec.replicas >= 2,
             timeout=30, what="us-east-1 Deployment scaled to 2", explain=lambda: cluster.describe(namespace))
    wait_for(lambda: len(cluster.ready_pods(
        namespace, "sloserve.io/model-service=chat,sloserve.io/region=us-east-1")) >= 2, timeout=30,
        what="2 ready pods in us-east-1", explain=lambda: cluster.describe(namespace))


def _reason(cluster, namespace: str, kind: str, reason: str):
    found = cluster.condition("chat", namespace, kind)
    return found if found and found.get("reason") == reason else None


def _refresh(cluster, pod):
    current = cluster.core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
    return next((c for c in current.status.conditions or [] if c.type == "PodScheduled"), None)


def _degraded(cluster, namespace: str):
    found = cluster.condition("chat", namespace, "Degraded")
    return found if found and found["status"] == "True" and "eu-west-1" in (found.get("message") or "") else None


def test_zones_as_regions_pin_each_deployment_to_its_zone(cluster, namespace):
    """placement.topology: zone, for one cluster whose "regions" are its zones: each zone's pods land on
    that zone's node, and the Service over all zones prefers same-zone endpoints."""
    spec = {**QUICKSTART_SPEC,
            "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 4, "warmPool": {"size": 0}},
            "replicas": 2,
            "placement": {"topology": "zone", "regions": [{"name": "us-east-1a"}, {"name": "us-east-1b"}]}}
    cluster.create_msvc("chat", namespace, spec)
    nodes = wait_for(lambda: _nodes_by_zone(cluster, namespace), timeout=60, what="one ready pod per zone",
                     explain=lambda: cluster.describe(namespace))
    assert nodes == {"us-east-1a": {"node-a"}, "us-east-1b": {"node-b"}}  # conftest.NODES
    assert cluster.core.read_namespaced_service("chat", namespace).spec.traffic_distribution == "PreferClose"
    regional = cluster.core.read_namespaced_service("chat-us-east-1a", namespace)
    assert regional.spec.traffic_distribution is None  # one zone's Service: nothing to prefer


def _nodes_by_zone(cluster, namespace: str) -> dict[str, set[str]] | None:
    pods = cluster.ready_pods(namespace, "sloserve.io/model-service=chat")
    found: dict[str, set[str]] = {}
    for pod in pods:
        found.setdefault(pod.metadata.labels["sloserve.io/region"], set()).add(pod.spec.node_name)
    return found if len(pods) == 2 and len(found) == 2 else None


def test_region_rename_keeps_serving_until_the_new_region_is_ready(cluster, namespace, startup_seconds):
    """No regions -> us-east-1 renames Deployment `chat` to `chat-us-east-1`. The old one keeps serving until
    the new one has its ready serving pods (each takes STARTUP seconds), then is scaled down and deleted: the
    Service never has fewer serving endpoints than the target."""
    spec = {**QUICKSTART_SPEC, "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 4,
                                           "warmPool": {"size": 0}}, "replicas": 2}
    cluster.create_msvc("chat", namespace, spec)
    wait_for(lambda: len(cluster.endpoint_ips(namespace, "chat")) == 2, timeout=60, what="2 serving endpoints",
             explain=lambda: cluster.describe(namespace))
    startup_seconds(6.0)

    lowest = [10**6]
    held_while_starting = [False]  # the old Deployment was seen alive while the new pods were not ready
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], len(cluster.endpoint_ips(namespace, "chat")))
            names = {d.metadata.name for d in cluster.deployments(namespace)}
            new_ready = len(cluster.ready_pods(namespace, f"{SELECTOR},sloserve.io/region=us-east-1"))
            if "chat" in names and "chat-us-east-1" in names and new_ready < 2:
                held_while_starting[0] = True
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        cluster.patch_msvc("chat", namespace, {"spec": {"placement": {"regions": [{"name": "us-east-1"}]}}})
        wait_for(lambda: (cluster.condition("chat", namespace, "Progressing") or {}).get("reason") == "RegionHandover",
                 timeout=30, what="Progressing=RegionHandover", explain=lambda: cluster.describe(namespace))

        def handed_over() -> bool:
            names = {d.metadata.name for d in cluster.deployments(namespace)}
            pods = cluster.live_pods(namespace, SELECTOR)
            return names == {"chat-us-east-1"} and len(pods) == 2 and all(
                p.metadata.labels["sloserve.io/region"] == "us-east-1" for p in pods)

        wait_for(handed_over, timeout=90, what="old Deployment and its pods gone, 2 pods in us-east-1",
                 explain=lambda: cluster.describe(namespace))
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert held_while_starting[0], "the old Deployment was not kept while the new region started"
    assert lowest[0] >= 2, f"serving endpoints dropped to {lowest[0]} during the region handover"
    pdbs = {p.metadata.name for p in cluster.policy.list_namespaced_pod_disruption_budget(namespace).items}
    assert pdbs == {"chat-us-east-1"}
