"""spec.routing on a real API server: the InferencePool(s) and HTTPRoute it renders are deleted again when
spec.routing is removed, and a removed region's pool goes with the region. The Gateway API CRDs are
installed here as minimal stand-ins (group, kind, schema-free): what is tested is the operator's listing and
deletion, not the published schemas (tests/kube/test_render_routing.py checks those offline).

`reconcile` runs in the test as cluster admin (the default chart grants no routing permissions); a last
check runs the same listing as the chart's ServiceAccount, which may not list pools, and must not fail."""

from __future__ import annotations

import time

from cluster_harness import api_client, apply, wait_for
from kubernetes import client
from quickstart_spec import QUICKSTART_SPEC
from sloserve_operator.kube.client import Kube
from sloserve_operator.kube.reconcile import list_children, reconcile

ROUTING = {"endpointPicker": {"name": "chat-epp"}, "httpRoute": {"gateways": [{"name": "inference-gateway"}]}}
REGIONS = [{"name": "us-east-1"}, {"name": "us-east-1b"}]


def _crd(group: str, kind: str, plural: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        # *.k8s.io groups are protected: the real CRDs carry their approval link, a stand-in says so.
        "metadata": {"name": f"{plural}.{group}",
                     "annotations": {"api-approved.kubernetes.io": "unapproved, test stand-in"}},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
    }


def _install_routing_crds(api: client.ApiClient) -> None:
    apply(api, [_crd("inference.networking.k8s.io", "InferencePool", "inferencepools"),
                _crd("gateway.networking.k8s.io", "HTTPRoute", "httproutes")])
    extensions = client.ApiextensionsV1Api(api)

    def established() -> bool:
        crds = [extensions.read_custom_resource_definition(name)
                for name in ("inferencepools.inference.networking.k8s.io", "httproutes.gateway.networking.k8s.io")]
        return all(any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
                   for crd in crds)

    wait_for(established, timeout=30, what="routing CRDs Established")


def _names(kube: Kube, kind: str, namespace: str) -> set[str]:
    return {obj["metadata"]["name"] for obj in kube.list(kind, namespace, {"sloserve.io/model-service": "chat"})}


def _reconciled(kube: Kube, cluster, namespace: str, kind: str, want: set[str]) -> bool:
    """One reconcile pass (as the drift check would run it), then whether `kind` holds exactly `want`."""
    reconcile(kube, cluster.msvc("chat", namespace), now=time.time())
    return _names(kube, kind, namespace) == want


def test_removing_routing_or_a_region_deletes_what_it_rendered(control_plane, cluster, namespace,
                                                               operator_kubeconfig):
    _install_routing_crds(cluster.api)
    kube = Kube(api_client(control_plane.admin_kubeconfig), discovery_ttl=0)
    spec = {**QUICKSTART_SPEC, "routing": ROUTING, "placement": {"regions": REGIONS},
            "scaling": {"mode": "manual"}, "replicas": 2}
    cluster.create_msvc("chat", namespace, spec)
    every_pool = {"chat", "chat-us-east-1", "chat-us-east-1b"}
    wait_for(lambda: _reconciled(kube, cluster, namespace, "InferencePool", every_pool), timeout=30,
             what="an InferencePool per ModelService and region", explain=lambda: cluster.describe(namespace))
    assert _names(kube, "HTTPRoute", namespace) == {"chat"}

    # A region removed: its pool goes once the handover lets its children go (the remaining region ready).
    cluster.patch_msvc("chat", namespace, {"spec": {"placement": {"regions": REGIONS[:1]}}})
    wait_for(lambda: _reconciled(kube, cluster, namespace, "InferencePool", {"chat", "chat-us-east-1"}),
             timeout=90, what="the removed region's pool deleted", explain=lambda: cluster.describe(namespace))

    # spec.routing removed: every pool and the route go; the serving children stay.
    cluster.patch_msvc("chat", namespace, {"spec": {"routing": None}})
    wait_for(lambda: _reconciled(kube, cluster, namespace, "InferencePool", set()), timeout=30,
             what="pools deleted", explain=lambda: cluster.describe(namespace))
    assert _names(kube, "HTTPRoute", namespace) == set()
    assert _names(kube, "Deployment", namespace) == {"chat-us-east-1"}

    # The chart's ServiceAccount (routing.enabled=false) may not list pools: the listing still succeeds.
    forbidden = Kube(api_client(operator_kubeconfig), discovery_ttl=0)
    try:
        forbidden.list("InferencePool", namespace)
        raise AssertionError("the default chart was expected to forbid listing InferencePools")
    except client.ApiException as error:
        assert error.status == 403, error
    kinds = {obj["kind"] for obj in list_children(forbidden, namespace, "chat", [], monitoring=False)}
    assert "Deployment" in kinds and "InferencePool" not in kinds
