"""Helpers for the control-plane tests: API clients, server-side apply, polling, identities.

A uniquely named module (not conftest) so `from cluster_harness import ...` never picks up another
directory's conftest."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config, dynamic
from quickstart_spec import GROUP, VERSION, model_service

# Objects of the rendered chart that the tests install; its Deployment is the operator we run ourselves.
INSTALLED_KINDS = {"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                   "ClusterRoleBinding", "Role", "RoleBinding", "ClusterKopfPeering",
                   "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
ROOT_DIR = Path(__file__).resolve().parents[2]
PLURAL = "modelservices"
FIELD_MANAGER = "sloserve-tests"

def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, what: str = "",
             explain: Callable[[], str] | None = None) -> Any:
    """Poll until predicate() is truthy; fail naming `what`, the last value and `explain()` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    detail = f"\n{explain()}" if explain else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}{detail}")


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def apply(api: client.ApiClient, objects: Iterable[dict[str, Any]]) -> None:
    """Server-side apply each object, as `kubectl apply --server-side` does."""
    dyn = dynamic.DynamicClient(api)
    for obj in objects:
        resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        namespace = obj["metadata"].get("namespace") if resource.namespaced else None
        resource.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=namespace,
                                   field_manager=FIELD_MANAGER, force_conflicts=True)


def ensure_namespace(api: client.ApiClient, name: str) -> str:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except client.ApiException as error:
        if error.status != 409:
            raise
    # Pods are refused until the ServiceAccount controller has made the namespace's default account.
    wait_for(lambda: _has_default_sa(core, name), timeout=30, what=f"default ServiceAccount in {name}")
    return name


def _has_default_sa(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespaced_service_account("default", namespace)
        return True
    except client.ApiException:
        return False


def service_account_token(api: client.ApiClient, name: str, namespace: str, seconds: int = 7200) -> str:
    """A bound token for the ServiceAccount (the TokenRequest API, as a pod's projected token)."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(
        audiences=[], expiration_seconds=seconds))
    answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return answer.status.token


class Cluster:
    """Typed reads and writes on the control plane for the tests (admin identity)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.policy = client.PolicyV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.discovery = client.DiscoveryV1Api(api)

    # ModelServices
    def create_msvc(self, name: str, namespace: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                           model_service(name, spec, namespace))

    def msvc(self, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch_msvc(self, name: str, namespace: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)

    def condition(self, name: str, namespace: str, kind: str) -> dict[str, Any] | None:
        status = (self.msvc(name, namespace) or {}).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)

    # children
    def deployments(self, namespace: str) -> list[client.V1Deployment]:
        return self.apps.list_namespaced_deployment(namespace).items

    def pods(self, namespace: str, selector: str = "") -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(namespace, label_selector=selector).items

    def live_pods(self, namespace: str, selector: str = "") -> list[client.V1Pod]:
        return [p for p in self.pods(namespace, selector) if p.metadata.deletion_timestamp is None]

    def ready_pods(self, namespace: str, selector: str = "") -> list[client.V1Pod]:
        return [p for p in self.live_pods(namespace, selector)
                if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]

    def describe(self, namespace: str) -> str:
        """What a failed wait needs to explain itself: workloads, pods and the namespace's recent Events."""
        lines = [f"deployment {d.metadata.name}: replicas={d.spec.replicas} ready={d.status.ready_replicas} "
                 f"conditions={[(c.type, c.status, c.reason) for c in d.status.conditions or []]}"
                 for d in self.deployments(namespace)]
        lines += [f"replicaset {r.metadata.name}: replicas={r.spec.replicas} ready={r.status.ready_replicas}"
                  for r in self.apps.list_namespaced_replica_set(namespace).items]
        lines += [f"pod {p.metadata.name}: node={p.spec.node_name} phase={p.status.phase} "
                  f"labels={p.metadata.labels} deleting={bool(p.metadata.deletion_timestamp)}"
                  for p in self.pods(namespace)]
        events = sorted(self.core.list_namespaced_event(namespace).items,
                        key=lambda e: str(e.last_timestamp or e.event_time or ""))
        lines += [f"event {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
                  for e in events[-25:]]
        return "\n".join(lines)

    def table(self, namespace: str) -> dict[str, Any]:
        """ModelServices as the server's Table (what `kubectl get msvc` prints: the printer columns)."""
        method, url, headers, body, post = self.api.param_serialize(
            "GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
            header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
            auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, header_params=headers, body=body, post_params=post)
        response.read()
        return json.loads(response.data)

    def endpoint_ips(self, namespace: str, service: str) -> set[str]:
        """Ready addresses of the Service, from its EndpointSlices (what kube-proxy would route to)."""
        slices = self.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}").items
        return {address for s in slices for e in s.endpoints or []
                if e.conditions is None or e.conditions.ready for address in e.addresses}
