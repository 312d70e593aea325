"""Least privilege, tested on an RBAC-enforcing API server with the chart's own ClusterRole: the operator's
ServiceAccount can do what reconciling needs and is refused everything else; a full reconcile (children,
pod roles, status, events, autoscaler memory, peering) runs without one Forbidden answer."""

from __future__ import annotations

import pytest
from cluster_harness import GROUP, PLURAL, VERSION, Cluster, api_client, wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException


@pytest.fixture(scope="module")
def as_operator(operator_kubeconfig) -> Cluster:
    return Cluster(api_client(operator_kubeconfig))


def refused(call, *args, **kwargs) -> int:
    try:
        call(*args, **kwargs)
    except ApiException as error:
        return error.status
    return 200


def test_forbidden_verbs_fail(as_operator, namespace):
    sa = as_operator
    body_secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}}
    checks = {
        "list secrets": (sa.core.list_namespaced_secret, namespace),
        "create secrets": (sa.core.create_namespaced_secret, namespace, body_secret),
        "delete namespaces": (sa.core.delete_namespace, namespace),
        "create modelservices": (sa.custom.create_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                                 {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelService",
                                  "metadata": {"name": "x"}, "spec": {}}),
        "delete modelservices": (sa.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, "x"),
        "delete pods": (sa.core.delete_namespaced_pod, "x", namespace),
        "create pods": (sa.core.create_namespaced_pod, namespace,
                        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        "list nodes": (sa.core.list_node,),
        # kopf lists and watches CRDs (the chart allows that), but changing them is the installer's job.
        "delete CRDs": (client.ApiextensionsV1Api(sa.api).delete_custom_resource_definition,
                        "modelservices.sloserve.io"),
        "create clusterroles": (client.RbacAuthorizationV1Api(sa.api).create_cluster_role,
                                {"metadata": {"name": "x"}, "rules": []}),
        "create pods/exec": (sa.core.connect_get_namespaced_pod_exec, "x", namespace),
    }
    answers = {what: refused(call, *args) for what, (call, *args) in checks.items()}
    assert all(status == 403 for status in answers.values()), answers


def test_needed_verbs_pass(as_operator, namespace):
    sa = as_operator
    assert refused(sa.apps.list_namespaced_deployment, namespace) == 200
    assert refused(sa.core.list_namespaced_pod, namespace) == 200
    assert refused(sa.custom.list_cluster_custom_object, GROUP, VERSION, PLURAL) == 200
    assert refused(sa.core.list_namespace) == 200
    assert refused(sa.custom.list_cluster_custom_object, "kopf.dev", "v1", "clusterkopfpeerings") == 200


def test_a_full_reconcile_meets_no_forbidden(cluster, namespace, operator):
    cluster.create_msvc("chat", namespace)
    wait_for(lambda: (cluster.msvc("chat", namespace).get("status") or {}).get("warm") == 1
             and (cluster.msvc("chat", namespace).get("status") or {}).get("serving") == 1,
             timeout=60, what="1 serving + 1 warm", explain=lambda: cluster.describe(namespace))
    wait_for(lambda: _exists_config_map(cluster, namespace), timeout=30, what="autoscaler ConfigMap", explain=lambda: cluster.describe(namespace))
    events = cluster.core.list_namespaced_event(namespace).items
    assert any(e.involved_object.kind == "ModelService" for e in events), "the operator posted no Event"
    lines = [line for line in operator.log().splitlines() if "403" in line or "Forbidden" in line
             or "forbidden" in line]
    assert not lines, "\n".join(lines[:20])


def _exists_config_map(cluster, namespace: str) -> bool:
    return refused(cluster.core.read_namespaced_config_map, "chat-autoscaler", namespace) == 200
