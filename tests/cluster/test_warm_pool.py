"""The warm pool on real ReplicaSets and EndpointSlices: what a label patch, a deletion cost and a rolling
update really do once the controllers (not the operator) own the pods."""

from __future__ import annotations

import threading
import time

import pytest
from cluster_harness import wait_for
from kubernetes import watch
from quickstart_spec import QUICKSTART_SPEC

pytestmark = pytest.mark.usefixtures("operator")

SELECTOR = "sloserve.io/model-service=chat"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
STARTUP = 8.0  # seconds a new pod takes to become Ready (the fake kubelet's stand-in for a model load)


def roles(cluster, namespace: str) -> dict[str, str]:
    return {p.metadata.name: p.metadata.labels.get("sloserve.io/role")
            for p in cluster.ready_pods(namespace, SELECTOR)}


def settled(cluster, namespace: str, serving: int, warm: int) -> dict[str, str] | None:
    """Pod roles once exactly `serving` + `warm` ready pods exist and the Service routes to the serving ones."""
    current = roles(cluster, namespace)
    serving_ips = {p.status.pod_ip for p in cluster.ready_pods(namespace, SELECTOR)
                   if p.metadata.labels.get("sloserve.io/role") == "serving"}
    if (sorted(current.values()) == sorted(["serving"] * serving + ["warm"] * warm)
            and cluster.endpoint_ips(namespace, "chat") == serving_ips):
        return current
    return None


def replica_set_of(pod) -> str:
    return next(ref.name for ref in pod.metadata.owner_references if ref.kind == "ReplicaSet")


def test_promotion_keeps_the_pod_in_its_replica_set_and_moves_it_behind_the_service(cluster, namespace,
                                                                                    startup_seconds):
    startup_seconds(STARTUP)
    cluster.create_msvc("chat", namespace)
    before = wait_for(lambda: settled(cluster, namespace, 1, 1), timeout=60, what="1 serving + 1 warm", explain=lambda: cluster.describe(namespace))
    serving = next(name for name, role in before.items() if role == "serving")
    warm = next(name for name, role in before.items() if role == "warm")
    warm_pod = cluster.core.read_namespaced_pod(warm, namespace)
    assert warm_pod.status.pod_ip not in cluster.endpoint_ips(namespace, "chat")

    # The serving pod is deleted by hand: the ReplicaSet's replacement starts as `serving` (the template's
    # role) but is not Ready for STARTUP seconds; the ready warm pod is promoted by a label patch first.
    cluster.core.delete_namespaced_pod(serving, namespace)
    started = time.monotonic()
    wait_for(lambda: warm_pod.status.pod_ip in cluster.endpoint_ips(namespace, "chat"), timeout=20,
             interval=0.1, what="promoted pod in the Service's EndpointSlices", explain=lambda: cluster.describe(namespace))
    promoted_after = time.monotonic() - started
    promoted = cluster.core.read_namespaced_pod(warm, namespace)
    assert promoted.metadata.uid == warm_pod.metadata.uid  # the same pod, not a new one
    assert promoted.metadata.labels["sloserve.io/role"] == "serving"
    assert replica_set_of(promoted) == replica_set_of(warm_pod)  # still counted by its ReplicaSet
    assert promoted_after < STARTUP, promoted_after

    # The ReplicaSet replaces the deleted pod and the operator makes it the new warm one.
    after = wait_for(lambda: settled(cluster, namespace, 1, 1), timeout=60, what="pool refilled", explain=lambda: cluster.describe(namespace))
    assert serving not in after and after[warm] == "serving"


def test_scale_down_removes_the_pods_with_the_lowest_deletion_cost(cluster, namespace):
    spec = {**QUICKSTART_SPEC, "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 6,
                                           "warmPool": {"size": 1}}, "replicas": 4}
    cluster.create_msvc("chat", namespace, spec)
    wait_for(lambda: settled(cluster, namespace, 4, 1), timeout=90, what="4 serving + 1 warm", explain=lambda: cluster.describe(namespace))

    deleted: dict[str, str | None] = {}
    stop = threading.Event()

    def record() -> None:
        stream = watch.Watch()
        for event in stream.stream(cluster.core.list_namespaced_pod, namespace, label_selector=SELECTOR,
                                   timeout_seconds=60):
            pod = event["object"]
            if pod.metadata.deletion_timestamp and pod.metadata.name not in deleted:
                deleted[pod.metadata.name] = (pod.metadata.annotations or {}).get(DELETION_COST)
            if stop.is_set():
                stream.stop()

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    time.sleep(0.5)
    cluster.patch_msvc("chat", namespace, {"spec": {"replicas": 1}})
    survivors = wait_for(lambda: settled(cluster, namespace, 1, 1), timeout=60, what="1 serving + 1 warm", explain=lambda: cluster.describe(namespace))
    stop.set()
    assert len(deleted) == 3, deleted
    costs = {p.metadata.name: int((p.metadata.annotations or {}).get(DELETION_COST, "0"))
             for p in cluster.live_pods(namespace, SELECTOR)}
    assert set(costs) == set(survivors)
    assert all(cost is not None for cost in deleted.values()), deleted
    assert max(int(cost) for cost in deleted.values()) <= min(costs.values()), (deleted, costs)


def test_rollout_keeps_the_serving_count(cluster, namespace, startup_seconds):
    """A spec change rolls out with maxSurge 1 / maxUnavailable 0. New pods start as `serving` (the
    template's role) and wait as warm until Ready; the next tick promotes a Ready new-revision pod and demotes
    an old-revision serving pod in its place, before the pod counts as available (minReadySeconds > a tick),
    so the old pod the Deployment then deletes is a warm one: the Service never has fewer serving endpoints
    than the serving target. (Warm pods count as available, so maxUnavailable 0 alone would not do this.)"""
    spec = {**QUICKSTART_SPEC, "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 4,
                                           "warmPool": {"size": 1}}, "replicas": 2}
    startup_seconds(3)
    cluster.create_msvc("chat", namespace, spec)
    before = wait_for(lambda: settled(cluster, namespace, 2, 1), timeout=90, what="2 serving + 1 warm", explain=lambda: cluster.describe(namespace))
    old_sets = {replica_set_of(cluster.core.read_namespaced_pod(name, namespace)) for name in before}

    lowest = [10**6]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], len(cluster.endpoint_ips(namespace, "chat")))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    new_runtime = {**QUICKSTART_SPEC["runtime"], "maxBatchSize": 8}
    cluster.patch_msvc("chat", namespace, {"spec": {"runtime": new_runtime}})

    def rolled_out():
        current = settled(cluster, namespace, 2, 1)
        if not current:
            return None
        pods = [cluster.core.read_namespaced_pod(name, namespace) for name in current]
        return current if all(replica_set_of(p) not in old_sets for p in pods) else None

    after = wait_for(rolled_out, timeout=120, what="rolled out: 2 serving + 1 warm, all from the new ReplicaSet", explain=lambda: cluster.describe(namespace))
    stop.set()
    sampler.join(timeout=5)
    assert lowest[0] >= 2, f"serving endpoints dropped to {lowest[0]} during the rollout"
    assert not set(after) & set(before)
    template = cluster.apps.read_namespaced_deployment("chat", namespace).spec.template
    assert template.metadata.labels["sloserve.io/role"] == "serving"
