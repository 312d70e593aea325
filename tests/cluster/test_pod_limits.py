"""What the scheduler and the disruption controller do with the pod-level limits render sets: the PDB on the
real Eviction API (what `kubectl drain` calls: a region's only pod is never evicted, one of two is), and
an hf:// download's ephemeral-storage request on the real scheduler."""

from __future__ import annotations

import pytest
from cluster_harness import wait_for
from kubernetes.client.rest import ApiException
from quickstart_spec import QUICKSTART_SPEC

pytestmark = pytest.mark.usefixtures("operator")
SELECTOR = "sloserve.io/model-service=chat"


def evict(cluster, namespace: str, name: str) -> int:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    try:
        cluster.core.create_namespaced_pod_eviction(name, namespace, body)
    except ApiException as error:
        return error.status
    return 201


def _budget_observed(cluster, namespace: str, pods: int) -> bool:
    pdb = cluster.policy.read_namespaced_pod_disruption_budget("chat", namespace)
    return bool(pdb.status and pdb.status.observed_generation == pdb.metadata.generation
                and pdb.status.current_healthy == pods)


def test_a_regions_only_pod_is_not_evicted_but_one_of_two_is(cluster, namespace):
    spec = {**QUICKSTART_SPEC, "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 3,
                                           "warmPool": {"size": 0}}, "replicas": 1}
    cluster.create_msvc("chat", namespace, spec)
    wait_for(lambda: len(cluster.ready_pods(namespace, SELECTOR)) == 1, timeout=60, what="1 ready pod",
             explain=lambda: cluster.describe(namespace))
    wait_for(lambda: _budget_observed(cluster, namespace, 1), timeout=30, what="PDB status for 1 pod")
    (only,) = cluster.ready_pods(namespace, SELECTOR)
    assert evict(cluster, namespace, only.metadata.name) == 429  # "would violate the disruption budget"
    assert only.metadata.name in {p.metadata.name for p in cluster.live_pods(namespace, SELECTOR)}

    cluster.patch_msvc("chat", namespace, {"spec": {"scaling": {"warmPool": {"size": 1}}}})  # 1 serving + 1 warm
    wait_for(lambda: len(cluster.ready_pods(namespace, SELECTOR)) == 2
             and cluster.policy.read_namespaced_pod_disruption_budget("chat", namespace).spec.max_unavailable == 1
             and _budget_observed(cluster, namespace, 2), timeout=60, what="2 ready pods, maxUnavailable 1",
             explain=lambda: cluster.describe(namespace))
    assert evict(cluster, namespace, only.metadata.name) == 201


def test_an_hf_download_requests_its_disk_from_the_scheduler(cluster, namespace):
    """hf:// weights go to an emptyDir capped at spec.model.storage, requested as ephemeral-storage: the
    scheduler places the pod only on a node with that much room (the fake nodes have 1Ti)."""
    def spec(storage: str) -> dict:
        return {**QUICKSTART_SPEC, "model": {"name": "m", "uri": "hf://org/model", "storage": storage},
                "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 2, "warmPool": {"size": 0}},
                "replicas": 1}

    cluster.create_msvc("fits", namespace, spec("200Gi"))
    cluster.create_msvc("huge", namespace, spec("2Ti"))
    fits = wait_for(lambda: [p for p in cluster.live_pods(namespace, "sloserve.io/model-service=fits")
                             if p.spec.node_name], timeout=60, what="the 200Gi pod scheduled",
                    explain=lambda: cluster.describe(namespace))
    volume = next(v for v in fits[0].spec.volumes if v.name == "model")
    assert volume.empty_dir.size_limit == "200Gi"
    assert fits[0].spec.containers[0].resources.requests["ephemeral-storage"] == "200Gi"

    def unschedulable():
        pods = cluster.live_pods(namespace, "sloserve.io/model-service=huge")
        conditions = [c for p in pods for c in p.status.conditions or [] if c.type == "PodScheduled"]
        return next((c for c in conditions if c.status == "False"), None)

    condition = wait_for(unschedulable, timeout=60, what="the 2Ti pod Unschedulable",
                         explain=lambda: cluster.describe(namespace))
    assert condition.reason == "Unschedulable" and "ephemeral-storage" in condition.message, condition
