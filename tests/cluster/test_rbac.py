"""Least privilege, tested on an RBAC-enforcing API server with the chart's own roles: the operator's
ServiceAccount can do what reconciling needs and is refused everything else; a full reconcile (children,
pod roles, status, events, autoscaler memory, peering) runs without one Forbidden answer, cluster-wide and
in the chart's default scope (a Role per watched namespace). Its pod patches are narrowed by the chart's
ValidatingAdmissionPolicy, and its children's blockOwnerDeletion passes OwnerReferencesPermissionEnforcement."""

from __future__ import annotations

import uuid

import pytest
from cluster_harness import (
    GROUP,
    INSTALLED_KINDS,
    PLURAL,
    VERSION,
    Cluster,
    api_client,
    apply,
    ensure_namespace,
    service_account_token,
    wait_for,
)
from kubernetes import client
from kubernetes.client.rest import ApiException
from operator_process import OperatorProcess


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
    assert not rbac_refusals(operator.log()), "\n".join(rbac_refusals(operator.log())[:20])


def rbac_refusals(log: str) -> list[str]:
    """Log lines of 403s from RBAC (their message says "is forbidden"), not those of admission refusing
    writes into a namespace being deleted (an earlier module's namespaces may still be terminating)."""
    return [line for line in log.splitlines() if "forbidden" in line and "being terminated" not in line]


def _exists_config_map(cluster, namespace: str) -> bool:
    return refused(cluster.core.read_namespaced_config_map, "chat-autoscaler", namespace) == 200


# ---------------------------------------------------------------- pod patches (ValidatingAdmissionPolicy)


def _sloserve_pod(cluster, namespace: str, name: str, labels: dict[str, str]) -> None:
    cluster.core.create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": {"note": "kept"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]}})


def _vap_ready(cluster) -> bool:
    """The policy's type check has run (the API server enforces it from then on)."""
    policies = client.AdmissionregistrationV1Api(cluster.api).list_validating_admission_policy().items
    return any(p.metadata.name == "sloserve-pod-patches" and p.status and p.status.observed_generation
               for p in policies)


def test_pod_patches_are_limited_to_role_and_deletion_cost(cluster, as_operator, namespace):
    wait_for(lambda: _vap_ready(cluster), timeout=30, what="ValidatingAdmissionPolicy type-checked")
    labels = {"sloserve.io/model-service": "chat", "sloserve.io/role": "serving", "app": "x"}
    _sloserve_pod(cluster, namespace, "p", labels)
    _sloserve_pod(cluster, namespace, "other", {"app": "x"})
    patch = as_operator.core.patch_namespaced_pod
    allowed = {
        "role -> warm": ("p", {"metadata": {"labels": {"sloserve.io/role": "warm"}}}),
        "deletion cost": ("p", {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-10"}}}),
        "both back": ("p", {"metadata": {"labels": {"sloserve.io/role": "serving"},
                                         "annotations": {"controller.kubernetes.io/pod-deletion-cost": None}}}),
    }
    forbidden = {
        "another label": ("p", {"metadata": {"labels": {"app": "y"}}}),
        "a new label": ("p", {"metadata": {"labels": {"extra": "1"}}}),
        "drop the model-service label": ("p", {"metadata": {"labels": {"sloserve.io/model-service": None}}}),
        "role outside serving/warm": ("p", {"metadata": {"labels": {"sloserve.io/role": "admin"}}}),
        "another annotation": ("p", {"metadata": {"annotations": {"note": "changed"}}}),
        "a finalizer": ("p", {"metadata": {"finalizers": ["example.com/hold"]}}),
        "the spec": ("p", {"spec": {"activeDeadlineSeconds": 5}}),
        "a pod of no ModelService": ("other", {"metadata": {"labels": {"sloserve.io/role": "warm"}}}),
    }
    assert {what: refused(patch, name, namespace, body) for what, (name, body) in allowed.items()} == \
        dict.fromkeys(allowed, 200)
    answers = {what: refused(patch, name, namespace, body) for what, (name, body) in forbidden.items()}
    assert all(status in (403, 422) for status in answers.values()), answers
    pod = cluster.core.read_namespaced_pod("p", namespace)
    # (The scheduler's binding adds topology labels; none of the refused patches changed anything.)
    assert labels.items() <= pod.metadata.labels.items() and "extra" not in pod.metadata.labels
    assert pod.metadata.annotations == {"note": "kept"} and not pod.metadata.finalizers
    # The policy binds the operator's account only: an administrator's patch is not limited.
    assert refused(cluster.core.patch_namespaced_pod, "p", namespace,
                   {"metadata": {"labels": {"app": "y"}}}) == 200


# ---------------------------------------------------------------- blockOwnerDeletion


def _owned_config_map(owner: dict, name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelService", "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]}}


def test_children_with_block_owner_deletion_are_accepted(cluster, as_operator, namespace, control_plane):
    """OwnerReferencesPermissionEnforcement (on in the harness) refuses blockOwnerDeletion without
    `update modelservices/finalizers`; the chart grants it, an account without it is refused."""
    owner = cluster.create_msvc("owner", namespace)
    assert refused(as_operator.core.create_namespaced_config_map, namespace,
                   _owned_config_map(owner, "chat-autoscaler")) == 200

    rbac = client.RbacAuthorizationV1Api(cluster.api)
    cluster.core.create_namespaced_service_account(namespace, {"metadata": {"name": "no-finalizers"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "no-finalizers"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "no-finalizers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-finalizers"},
        "subjects": [{"kind": "ServiceAccount", "name": "no-finalizers", "namespace": namespace}]})
    token = service_account_token(cluster.api, "no-finalizers", namespace)
    bare = client.CoreV1Api(_token_client(control_plane, token, f"system:serviceaccount:{namespace}:no-finalizers"))
    names = (f"plain-{index}" for index in range(1000))
    wait_for(lambda: refused(bare.create_namespaced_config_map, namespace,
                             {"metadata": {"name": next(names)}}) == 200,
             timeout=10, what="the new Role in effect (a ConfigMap without owner created)")
    answer = refused(bare.create_namespaced_config_map, namespace, _owned_config_map(owner, "blocked"))
    assert answer == 403, answer  # the Role allows the create; only blockOwnerDeletion is refused


def _token_client(control_plane, token: str, user: str) -> client.ApiClient:
    path = control_plane.workdir / f"{user.replace(':', '-')}.kubeconfig"
    return api_client(control_plane.write_kubeconfig(path, token, user=user))


# ---------------------------------------------------------------- the default: a Role per watched namespace


@pytest.fixture(scope="module")
def scoped_release(cluster):
    """The chart with its default scope (a Role per watched namespace) installed as a second release."""
    from sloserve_operator.kube import manifests

    watched = ensure_namespace(cluster.api, f"watched-{uuid.uuid4().hex[:5]}")
    objects = [obj for obj in manifests.render_chart({"watchNamespaces": [watched]}, release="scoped")
               if obj["kind"] in INSTALLED_KINDS | {"KopfPeering"}]
    apply(cluster.api, objects)
    yield watched, service_account_token(cluster.api, "scoped-sloserve", "sloserve-system")
    cluster.core.delete_namespace(watched)


def test_default_scope_grants_writes_in_watched_namespaces_only(cluster, scoped_release, namespace, control_plane):
    watched, token = scoped_release
    sa = Cluster(_token_client(control_plane, token, "system:serviceaccount:sloserve-system:scoped-sloserve"))
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "chat-autoscaler"}}
    assert refused(sa.core.create_namespaced_config_map, watched, config_map) == 200
    assert refused(sa.core.list_namespaced_pod, watched) == 200
    assert refused(sa.custom.list_namespaced_custom_object, GROUP, VERSION, watched, PLURAL) == 200
    elsewhere = {
        "create configmaps": refused(sa.core.create_namespaced_config_map, namespace, config_map),
        "list pods": refused(sa.core.list_namespaced_pod, namespace),
        "list deployments": refused(sa.apps.list_namespaced_deployment, namespace),
        "list modelservices": refused(sa.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL),
        "all pods": refused(sa.core.list_pod_for_all_namespaces),
    }
    assert set(elsewhere.values()) == {403}, elsewhere


def test_a_namespaced_operator_reconciles_without_forbidden(cluster, scoped_release, control_plane,
                                                             tmp_path):
    watched, token = scoped_release
    kubeconfig = control_plane.write_kubeconfig(tmp_path / "scoped.kubeconfig", token,
                                                user="system:serviceaccount:sloserve-system:scoped-sloserve")
    process = OperatorProcess(kubeconfig, tmp_path, "scoped", f"--namespace={watched}", "--peering=scoped-sloserve",
                              "--drift-interval=2", "--autoscale-interval=2")
    try:
        process.start()
        cluster.create_msvc("chat", watched)
        wait_for(lambda: ((cluster.msvc("chat", watched) or {}).get("status") or {}).get("serving") == 1
                 and ((cluster.msvc("chat", watched) or {}).get("status") or {}).get("warm") == 1,
                 timeout=60, what="1 serving + 1 warm", explain=lambda: cluster.describe(watched))
        wait_for(lambda: _exists_config_map(cluster, watched), timeout=30, what="autoscaler ConfigMap")
    finally:
        process.stop()
    assert not rbac_refusals(process.log()), "\n".join(rbac_refusals(process.log())[:20])
