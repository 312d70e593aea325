"""The autoscale tick persists its decision before it acts (issue 16 item 4).

The real operator against kmock, with a metrics source that breaches the TTFT budget on every tick, so every
tick wants to scale up and promote. While the decision's write (the memory ConfigMap, resourceVersion
precondition) answers 409, no tick may touch a pod or a Deployment; once the writes go through, the same
ticks scale up (the control that the blocked ticks really wanted to act).
"""

from __future__ import annotations

import kmock
import pytest
from operator_harness import BreachingSource, fake_pod, wait_for

NAMESPACE = "racing"


CONFLICTING = {"on": True}


def install_conflicts(cluster) -> None:
    """Every ConfigMap write in NAMESPACE answers 409 while CONFLICTING["on"]: another writer always won."""

    def conflicting(request) -> bool:
        return (CONFLICTING["on"] and request.namespace == NAMESPACE and request.resource is not None
                and request.resource.plural == "configmaps"
                and request.action in (kmock.action.CREATE, kmock.action.UPDATE))

    payload = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 409, "reason": "Conflict",
               "message": "injected: the object has been modified"}
    cluster.emulator[conflicting] << (lambda request: kmock.Response(status=409, payload=payload))


@pytest.fixture(scope="module")
def op(operator_factory):
    # The drift check is far away: every pod or Deployment write during the test comes from the ticks.
    operator = operator_factory(drift_interval=300.0, autoscale_interval=0.5, source=BreachingSource(),
                                setup=install_conflicts)
    yield operator
    operator.cleanup()


def writes(op, plural: str) -> int:
    return op.cluster.call(lambda: len([
        request for request in list(op.cluster.emulator)
        if request.action == kmock.action.UPDATE and request.namespace == NAMESPACE
        and request.resource is not None and request.resource.plural == plural]))


def configmap_attempts(op) -> int:
    return op.cluster.call(lambda: len([
        request for request in list(op.cluster.emulator)
        if request.namespace == NAMESPACE and request.resource is not None
        and request.resource.plural == "configmaps" and request.action in (kmock.action.CREATE, kmock.action.UPDATE)]))


def test_a_conflict_on_the_decision_write_acts_on_nothing(op):
    op.create("hot", namespace=NAMESPACE)  # quickstart sizing: min 1, max 3, warm pool 1
    deployment = wait_for(lambda: op.cluster.objects("apps/v1/deployments", NAMESPACE).get("hot"),
                          what="Deployment hot")
    wait_for(lambda: op.condition_in(NAMESPACE, "hot", "Ready"), what="the create handler's status")
    wait_for(lambda: configmap_attempts(op) >= 1, what="a tick whose decision write got 409")
    assert writes(op, "deployments") == 0, "a tick scaled although its decision was not persisted"

    for index in range(2):
        op.kube.create(fake_pod(deployment, index))
    pods_before = writes(op, "pods")
    attempts = configmap_attempts(op)
    wait_for(lambda: configmap_attempts(op) >= attempts + 3, what="three more ticks whose decision write got 409")
    assert writes(op, "pods") == pods_before, "a tick patched a pod although its decision was not persisted"
    assert writes(op, "deployments") == 0, "a tick scaled although its decision was not persisted"
    assert op.cluster.objects("apps/v1/deployments", NAMESPACE)["hot"]["spec"]["replicas"] == 2
    assert (op.msvc("hot", NAMESPACE).get("status") or {}).get("lastDecision") is None

    CONFLICTING["on"] = False
    wait_for(lambda: op.cluster.objects("apps/v1/deployments", NAMESPACE)["hot"]["spec"]["replicas"] >= 3,
             what="the persisted scale-up applied")
    assert writes(op, "pods") > pods_before  # roles and deletion costs written once the decision was stored
