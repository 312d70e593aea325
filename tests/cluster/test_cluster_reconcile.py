"""The real operator process, as the chart's ServiceAccount, reconciling ModelServices on a real control
plane: children with owner references, status through the status subresource, printer columns, the scale
subresource in manual mode, and deletion collected by the real garbage collector."""

from __future__ import annotations

import pytest
from cluster_harness import PLURAL, wait_for
from kubernetes.client.rest import ApiException
from quickstart_spec import GROUP, QUICKSTART_SPEC, VERSION

pytestmark = pytest.mark.usefixtures("operator")


def owned_by(obj, uid: str) -> bool:
    return any(ref.uid == uid and ref.controller for ref in obj.metadata.owner_references or [])


def _get(read, *args):
    try:
        return read(*args)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_children_status_and_garbage_collection(cluster, namespace):
    created = cluster.create_msvc("chat", namespace)
    uid = created["metadata"]["uid"]

    deployment = wait_for(lambda: _get(cluster.apps.read_namespaced_deployment, "chat", namespace),
                          what="Deployment chat", explain=lambda: cluster.describe(namespace))
    service = wait_for(lambda: _get(cluster.core.read_namespaced_service, "chat", namespace), what="Service", explain=lambda: cluster.describe(namespace))
    pdb = wait_for(lambda: _get(cluster.policy.read_namespaced_pod_disruption_budget, "chat", namespace),
                   what="PodDisruptionBudget", explain=lambda: cluster.describe(namespace))
    for child in (deployment, service, pdb):
        assert owned_by(child, uid), child.metadata
    assert deployment.spec.replicas == 2  # one serving + one warm

    # Real ReplicaSet, scheduler and (fake) kubelet: two Ready pods, one serving, one warm.
    wait_for(lambda: len(cluster.ready_pods(namespace, "sloserve.io/model-service=chat")) == 2, timeout=60,
             what="2 ready pods", explain=lambda: cluster.describe(namespace))
    status = wait_for(lambda: _settled(cluster, namespace), timeout=60, what="status serving=1 warm=1", explain=lambda: cluster.describe(namespace))
    assert status["observedGeneration"] == created["metadata"]["generation"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready.get("observedGeneration") == created["metadata"]["generation"]
    assert status["selector"] == "sloserve.io/model-service=chat,sloserve.io/role=serving"

    config_map = wait_for(lambda: _get(cluster.core.read_namespaced_config_map, "chat-autoscaler", namespace),
                          timeout=30, what="autoscaler ConfigMap", explain=lambda: cluster.describe(namespace))
    assert owned_by(config_map, uid) or any(r.uid == uid for r in config_map.metadata.owner_references or [])

    # The printer columns `kubectl get msvc` shows are filled from this status.
    table = cluster.table(namespace)
    columns = [c["name"] for c in table["columnDefinitions"]]
    cells = dict(zip(columns, table["rows"][0]["cells"], strict=True))
    assert cells["Ready"] == "True" and cells["Serving"] == 1 and cells["Warm"] == 1, cells

    # Deleting the ModelService: kopf lifts its finalizer, the garbage collector removes every child.
    cluster.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "chat")
    wait_for(lambda: cluster.msvc("chat", namespace) is None, timeout=30, what="ModelService gone", explain=lambda: cluster.describe(namespace))
    wait_for(lambda: not cluster.deployments(namespace) and not cluster.pods(namespace)
             and _get(cluster.core.read_namespaced_config_map, "chat-autoscaler", namespace) is None
             and _get(cluster.core.read_namespaced_service, "chat", namespace) is None,
             timeout=60, what="children garbage-collected", explain=lambda: cluster.describe(namespace))


def _settled(cluster, namespace: str, name: str = "chat", serving: int = 1, warm: int = 1):
    status = (cluster.msvc(name, namespace) or {}).get("status") or {}
    if status.get("serving") == serving and status.get("warm") == warm and any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []):
        return status
    return None


def test_scale_subresource_in_manual_mode(cluster, namespace):
    """`kubectl scale msvc chat --replicas=3` writes spec.replicas through /scale; the operator follows."""
    spec = {**QUICKSTART_SPEC, "scaling": {"mode": "manual", "minReplicas": 1, "maxReplicas": 4,
                                           "warmPool": {"size": 0}}, "replicas": 1}
    cluster.create_msvc("chat", namespace, spec)
    wait_for(lambda: _settled(cluster, namespace, serving=1, warm=0), timeout=60, what="1 serving", explain=lambda: cluster.describe(namespace))

    cluster.custom.patch_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "chat",
                                                        {"spec": {"replicas": 3}})
    assert cluster.msvc("chat", namespace)["spec"]["replicas"] == 3
    wait_for(lambda: _settled(cluster, namespace, serving=3, warm=0), timeout=60, what="3 serving", explain=lambda: cluster.describe(namespace))
    scale = cluster.custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "chat")
    assert scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "sloserve.io/model-service=chat,sloserve.io/role=serving"
    assert cluster.apps.read_namespaced_deployment("chat", namespace).spec.replicas == 3


def test_scale_subresource_reads_in_slo_mode(cluster, namespace):
    """Tools that read /scale (kubectl, KEDA, dashboards) must get an answer in slo mode too."""
    cluster.create_msvc("chat", namespace)
    wait_for(lambda: _settled(cluster, namespace), timeout=60, what="status serving=1 warm=1",
             explain=lambda: cluster.describe(namespace))
    # Unset spec.replicas would make the API server answer 500 ("the spec replicas field does not exist").
    scale = cluster.custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "chat")
    assert scale["spec"]["replicas"] == 1  # the schema's default; slo mode ignores it
    assert scale["status"]["selector"] == "sloserve.io/model-service=chat,sloserve.io/role=serving"
    # status.replicas of /scale counts what the selector selects (HPA divides by it): the serving pod,
    # not the warm one too (statusReplicasPath was .status.replicas, all roles: 2).
    selected = cluster.ready_pods(namespace, scale["status"]["selector"])
    assert scale["status"]["replicas"] == len(selected) == 1


def test_an_invalid_spec_still_publishes_the_selector(cluster, namespace):
    """A spec the schema accepts but no object can express (s3:// has no fetcher yet): Stalled, and /scale
    still hands out the serving selector, never "" (which selects every pod in the namespace)."""
    spec = {**QUICKSTART_SPEC, "model": {"name": "m", "uri": "s3://bucket/model"}}
    cluster.create_msvc("chat", namespace, spec)
    stalled = wait_for(lambda: (cluster.condition("chat", namespace, "Stalled") or {}).get("status") == "True",
                       timeout=60, what="Stalled=True", explain=lambda: cluster.describe(namespace))
    assert stalled
    scale = cluster.custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, "chat")
    assert scale["status"]["selector"] == "sloserve.io/model-service=chat,sloserve.io/role=serving"
    with pytest.raises(ApiException) as refused:  # and nobody may write an empty one
        cluster.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "chat",
                                                             {"status": {"selector": ""}})
    assert refused.value.status == 422
